"""``affectflow evaluate``: MER-UniBench scoring of one predictions file, or of every checkpoint of a
results folder in the release's layout (``--results``) with the best epoch per dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from affectflow.options import add_config_options, config_from_args
from core.console import echo, progress
from core.errors import InputError


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """``--sentiment rules|llm`` and ``--extract llm|rules`` (config ``score.sentiment``, ``score.extract``)."""
    parser.add_argument("--sentiment", choices=["rules", "llm"],
                        help="sentiment sets: map label lists by the valence rules (default, no LLM) or "
                             "with the extractor (config score.sentiment)")
    parser.add_argument("--extract", choices=["llm", "rules"],
                        help="outputs without the label template: the extractor (default; refused without "
                             "one) or the emotion words spotted in the text (config score.extract)")


def scoring_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides for the options of :func:`add_scoring_options` that were given."""
    return [f"score.{k}={getattr(args, k)}" for k in ("sentiment", "extract") if getattr(args, k, None)]


def _extractor(path: str | None, batch_size: int):
    if not path:
        return None
    from scoring.parse import LLMExtractor

    return LLMExtractor(path, batch_size=batch_size)


def run_evaluate(
    dataset: str,
    gt: str,
    predictions: str,
    wheel_dir: str,
    extractor_path: str | None = None,
    extractor_batch_size: int = 16,
    sentiment: str = "rules",
    extract: str = "llm",
) -> dict:
    """Score one dataset, loading the LLM extractor from ``extractor_path`` when given."""
    from scoring.evaluate import evaluate

    return evaluate(dataset, gt, predictions, wheel_dir, extractor=_extractor(extractor_path, extractor_batch_size),
                    sentiment=sentiment, extract=extract)


def format_table(result: dict) -> str:
    """A small fixed-width table of the scores (x100), then how the labels were made."""
    from scoring.evaluate import extraction_notes

    scores = result["scores"]
    rows = [(k, v) for k, v in scores.items() if isinstance(v, float)]
    lines = [f"{result['dataset']} ({result['metric']}, {result['counts']['gold']} samples)"]
    lines += [f"  {k:<10} {100 * v:6.2f}" for k, v in rows]
    for w in scores.get("per_wheel", []):
        cells = "  ".join(f"{k}={100 * v:.2f}" for k, v in w.items() if isinstance(v, float))
        lines.append(f"  wheel{w['wheel']}     {cells}  (n={w['n']})")
    lines += [f"  note: {line}" for line in extraction_notes(result)]
    return "\n".join(lines)


def _cmd_results(args: argparse.Namespace, cfg) -> int:
    from scoring.evaluate import write_rows
    from scoring.report import results_markdown
    from scoring.results import RELEASE_EPOCHS, n_checkpoints, score_results

    if args.predictions:
        raise InputError("--results scores a whole folder: leave out --predictions")
    if not args.gt:
        raise InputError("--results needs the gold labels: --gt ROOT (the MER-UniBench root holding the "
                         "*-process folders)")
    total = n_checkpoints(args.results, args.dataset, args.model)
    with progress("score checkpoints", unit="checkpoints", total=total) as bar:
        summary = score_results(
            args.results, args.gt, cfg.score, dataset=args.dataset, model=args.model,
            extractor=_extractor(args.extractor, cfg.label.batch_size),
            epochs=None if args.all_epochs else RELEASE_EPOCHS, progress=bar,
        )
    records = []
    for d, entry in summary["datasets"].items():
        for ckpt, result in entry["checkpoints"].items():
            records += [{"dataset": d, "checkpoint": ckpt, **r} for r in result.pop("rows")]
    out = Path(args.out) if args.out else Path(args.results) / "scores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    if args.rows:
        write_rows(records, args.rows)
    if args.json:
        echo(json.dumps(summary, sort_keys=True, indent=2))
    else:
        echo(results_markdown(summary), end="")
    echo(f"wrote {out}" + (f" and {args.rows}" if args.rows else ""))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    extra = [f"score.wheel_dir={args.wheel}"] if args.wheel else []
    cfg = config_from_args(args, extra + scoring_overrides(args))
    if args.results:
        return _cmd_results(args, cfg)
    missing = [f"--{k}" for k in ("dataset", "gt", "predictions") if not getattr(args, k)]
    if missing:
        raise InputError(f"give {', '.join(missing)} (one predictions file), or --results DIR with --gt ROOT")
    if args.model or args.all_epochs or args.out:
        raise InputError("--model, --all-epochs and --out go with --results DIR")
    result = run_evaluate(
        args.dataset,
        args.gt,
        args.predictions,
        cfg.score.wheel_dir,
        extractor_path=args.extractor,
        extractor_batch_size=cfg.label.batch_size,
        sentiment=cfg.score.sentiment,
        extract=cfg.score.extract,
    )
    rows = result.pop("rows")
    if args.rows:
        from scoring.evaluate import write_rows

        write_rows([{"dataset": result["dataset"], **r} for r in rows], args.rows)
    if args.json:
        echo(json.dumps(result, sort_keys=True, indent=2))
    else:
        echo(format_table(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score predictions on one MER-UniBench dataset, or a results folder")
    p.add_argument(
        "--dataset",
        help="MER2023, MER2024, IEMOCAPFour, MELD, CMUMOSI, CMUMOSEI, SIMS, SIMSv2 or OVMERDPlus "
             "(with --results: only this one; default: from the results-{dataset} folder names)",
    )
    p.add_argument(
        "--gt",
        "--unibench-root",
        dest="gt",
        metavar="PATH",
        help="the dataset's label file (npz or name,openset CSV) or its folder; with --results the "
             "MER-UniBench root holding the *-process folders",
    )
    p.add_argument(
        "--predictions",
        metavar="FILE",
        help="CSV/parquet (name + openset|text|sentiment) or a reference result .npz",
    )
    p.add_argument(
        "--results",
        metavar="DIR",
        help="score every checkpoint_*.npz of a release-style folder (results-{dataset}/[model/]"
             "checkpoint_*.npz with -openset.npz beside each, or a folder of such folders); prints the "
             "table, writes JSON, best of epochs 30..60 per dataset (ties: the earliest)",
    )
    p.add_argument("--model", metavar="NAME", help="with --results: the model folder inside results-{dataset}/")
    p.add_argument("--all-epochs", action="store_true",
                   help="with --results: every checkpoint competes for the best (default: epochs 30, 35, ..., 60)")
    p.add_argument("--out", metavar="FILE", help="with --results: the JSON to write (default: DIR/scores.json)")
    p.add_argument("--rows", metavar="FILE",
                   help="also write each scored row (labels, sentiment and where each came from) as a CSV")
    p.add_argument(
        "--wheel",
        metavar="DIR",
        help="emotion-wheel folder (config score.wheel_dir; default: the packaged files)",
    )
    p.add_argument(
        "--extractor",
        metavar="PATH",
        help="local Qwen2.5-Instruct checkpoint for free-text outputs (and --sentiment llm)",
    )
    add_scoring_options(p)
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_config_options(p)
    p.set_defaults(func=_cmd_evaluate)
