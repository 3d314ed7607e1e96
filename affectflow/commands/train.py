"""``affectflow train`` and ``affectflow model summary``."""

from __future__ import annotations

import argparse
import json

from affectflow.options import add_config_options, add_verbose_option, config_from_args
from core.console import echo, progress


def _cmd_train(args: argparse.Namespace) -> int:
    from training.trainer import TrainRequest, train

    extra = []
    if args.preset:
        extra.append(f"model.preset={args.preset}")
    if args.workers is not None:
        extra.append(f"train.workers={args.workers}")
    if args.zero is not None:
        extra.append(f"train.zero_stage={args.zero}")
    if args.mlflow_uri:
        extra.append(f"mlflow.tracking_uri={args.mlflow_uri}")
    cfg = config_from_args(args, extra)
    register = not args.no_register and not args.no_track
    on_finish = None
    if register:
        from registry.register import log_and_register

        on_finish = lambda ckpt, c: log_and_register(ckpt, c, bundle_base=not args.no_bundle_base)  # noqa: E731
    features = _reviewed_features(args, cfg) if args.labels else None
    with progress("train", unit="step") as bar:
        request = TrainRequest(cfg, args.store, args.corpus, args.out, models=args.models, resume=args.resume,
                               features=features, track=not args.no_track)
        result = train(request, on_finish=on_finish, progress=bar.set)
    echo(f"[train] final checkpoint: {result.checkpoint_dir}")
    echo(f"[train] metrics: {json.dumps(result.metrics)}")
    if result.tracking == "on":
        echo(f"[train] MLflow run: {result.mlflow_run_id}")
    elif result.tracking == "off":
        echo(f"[train] not tracked (--no-track); to upload the run and register its model, run:\n"
             f"    {result.register_later}")
    # Exit 1: the model is trained but not registered yet (the printed `affectflow register` command does it).
    return 1 if register and result.registered is None else 0


def _reviewed_features(args: argparse.Namespace, cfg):
    """The feature reader each worker builds when ``--labels VERDICTS.csv`` is given: the store's (or
    --corpus') labels with the reviewers' label sets in their place (`training.data.load_features`)."""
    import functools

    from core.errors import InputError
    from core.paths import absolute
    from features.labels import read_verdicts
    from features.store import FeatureStore
    from training.data import load_features, store_labels

    if not args.store:
        raise InputError("--labels needs --store: the verdicts relabel samples of a feature store")
    # Checked here, before Ray starts, as train() checks a store it reads itself.
    verdicts = read_verdicts(args.labels)
    store = FeatureStore(str(absolute(args.store)))
    store.require_store()
    if not args.corpus:
        store_labels(store.path)
    given = {n for n, labels in zip(verdicts["name"], verdicts["labels"]) if labels is not None}
    stored = set(store.samples(columns=["status"])["name"])
    if given and not given & stored:
        raise InputError(f"--labels {args.labels}: none of its {len(given)} labeled names is in the store "
                         f"{args.store} (e.g. {sorted(given)[0]!r})")
    echo(f"[train] review verdicts {args.labels}: {len(given & stored)} samples take the reviewers' labels"
         + (f" ({len(given - stored)} names not in the store)" if given - stored else ""))
    return functools.partial(load_features, str(absolute(args.store)),
                             str(absolute(args.corpus)) if args.corpus else None, cfg.model.visual_stream,
                             str(absolute(args.labels)))


def _cmd_model_summary(args: argparse.Namespace) -> int:
    from core.errors import InputError
    from modeling.model import model_summary

    if args.preset == "tiny" and not args.llm_path:
        raise InputError("the tiny preset is built from its files: pass --llm-path DIR/qwen2 "
                         "(see `affectflow tiny-models`)")
    summary = model_summary(args.preset, llm_path=args.llm_path, visual_dim=args.visual_dim, audio_dim=args.audio_dim)
    if args.json:
        echo(json.dumps(summary, indent=2))
        return 0
    echo(f"preset {summary['preset']} (hidden {summary['hidden_size']}, visual {summary['visual_dim']}, "
         f"audio {summary['audio_dim']}{', meta device' if summary['meta'] else ''})")
    for part, n in summary["counts"].items():
        echo(f"  {part:<11} {n:>15,}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train AffectGPT on a feature store (Ray Train + DeepSpeed)")
    p.add_argument("--store", help="feature store (Zarr) written by preprocessing")
    p.add_argument("--corpus", help="corpus root whose track2/track3 label CSVs replace the labels preprocessing "
                                    "stored (needed only for a store written without them)")
    p.add_argument("--labels", metavar="VERDICTS.csv",
                   help="review verdicts (`affectflow review pull`): their label sets replace the stored ones "
                        "for those samples")
    p.add_argument("--out", help="run folder (checkpoints, metrics); default <paths.runs>/train")
    p.add_argument("--preset", choices=["tiny", "qwen2.5-7b"], help="model preset (default: model.preset)")
    p.add_argument("--models", help="tiny-models folder (tiny preset); else set model.llm_path")
    p.add_argument("--workers", type=int, help="data-parallel workers (default: train.workers)")
    p.add_argument("--zero", type=int, choices=[2, 3], help="DeepSpeed ZeRO stage (default: train.zero_stage)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else mlflow.tracking_uri)")
    p.add_argument("--no-track", action="store_true",
                   help="no MLflow: metrics in <out>/metrics.jsonl only "
                        "(affectflow register RUN_DIR uploads them later)")
    p.add_argument("--no-register", action="store_true",
                   help="do not log the final checkpoint as an MLflow model nor register it "
                        "(see `affectflow register`)")
    p.add_argument("--no-bundle-base", action="store_true",
                   help="register without copying the base LLM into the model (the loader then needs its path)")
    add_config_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("model", help="inspect the model")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    s = msub.add_parser("summary", help="parameter counts by part (qwen2.5-7b: on the meta device, no weights)")
    s.add_argument("--preset", choices=["tiny", "qwen2.5-7b"], default="qwen2.5-7b")
    s.add_argument("--llm-path", help="local base LLM folder (required for tiny)")
    s.add_argument("--visual-dim", type=int, help="visual feature width (default 768)")
    s.add_argument("--audio-dim", type=int, help="audio feature width (default 1024)")
    s.add_argument("--json", action="store_true", help="print JSON")
    add_verbose_option(s)
    s.set_defaults(func=_cmd_model_summary)
