"""``affectflow label``, ``affectflow infer`` and ``affectflow register``."""

from __future__ import annotations

import argparse
import json

from affectflow.options import (
    add_config_options,
    add_question_options,
    config_from_args,
    count,
    failure_gate,
    fraction,
    question_overrides,
)
from core.console import echo, progress

MODEL_HELP = ("checkpoint folder, training run folder, or MLflow URI (models:/NAME@ALIAS, models:/NAME/N, "
              "runs:/ID/model)")


def _label_overrides(args: argparse.Namespace) -> list[str]:
    extra = question_overrides(args)
    for flag, key in (("batch_size", "label.batch_size"), ("max_new_tokens", "label.max_new_tokens"),
                      ("seed", "seed")):
        value = getattr(args, flag, None)
        if value is not None:
            extra.append(f"{key}={value}")
    if getattr(args, "sample", False):
        extra.append("label.do_sample=true")
    if getattr(args, "max_failure_rate", None) is not None:
        extra.append(f"label.max_failure_rate={args.max_failure_rate}")
    if getattr(args, "follow_symlinks", False):
        extra.append("preprocess.follow_symlinks=true")
    if getattr(args, "mlflow_uri", None):
        extra.append(f"mlflow.tracking_uri={args.mlflow_uri}")
    return extra


def _cmd_label(args: argparse.Namespace) -> int:
    from inference.labeling import LabelRequest, label

    cfg = config_from_args(args, _label_overrides(args))
    request = LabelRequest(args.input, args.model, args.out, cfg, layout=args.layout, models=args.models,
                           faces=args.faces, limit=args.limit, llm_path=args.llm_path, retry_failed=args.retry_failed)
    with progress("label", unit="samples") as bar:
        summary = label(request, progress=bar)
    echo(summary.format())
    return failure_gate(summary, cfg.label.max_failure_rate, "label")


def _cmd_infer(args: argparse.Namespace) -> int:
    from inference.infer import InferRequest, infer

    cfg = config_from_args(args, _label_overrides(args) + (["preprocess.asr=true"] if args.asr else []))
    result = infer(InferRequest(args.video, args.audio, args.subtitle, args.model, cfg, models=args.models,
                                face_npy=args.face_npy, llm_path=args.llm_path))
    if args.json:
        echo(json.dumps(result.__dict__, indent=2, sort_keys=True))
    else:
        echo(result.format())
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from registry.register import log_and_register

    given = (("mlflow.tracking_uri", args.mlflow_uri), ("mlflow.registered_model", args.name),
             ("mlflow.alias", args.alias))
    extra = [f"{key}={value}" for key, value in given if value]
    result = log_and_register(args.checkpoint, config_from_args(args, extra), bundle_base=not args.no_bundle_base,
                              llm_path=args.llm_path)
    if result is None:
        return 1
    echo(json.dumps(result.__dict__, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="batch-label a feature store or raw videos with a model (Ray Data)")
    p.add_argument("--input", required=True, metavar="PATH",
                   help="feature store, MER2025 corpus root, folder of videos or WebDataset shards")
    p.add_argument("--model", required=True, metavar="URI", help=MODEL_HELP)
    p.add_argument("--out", required=True, metavar="FILE", help="output table: .parquet or .csv (resumable)")
    add_question_options(p)
    p.add_argument("--batch-size", type=int, help="samples per generation batch (label.batch_size)")
    p.add_argument("--seed", type=int, help="sampling seed (default: seed)")
    p.add_argument("--max-new-tokens", type=int,
                   help="new tokens per row (default: each task's own, label.max_new_tokens)")
    p.add_argument("--sample", action="store_true", help="sample (temperature/top-p, seeded) instead of greedy")
    p.add_argument("--layout", choices=["store", "mer2025", "folder", "webdataset"], help="default: detected")
    p.add_argument("--models", metavar="DIR", help="encoders folder (clip/, hubert/[, whisper/]) for raw media")
    p.add_argument("--faces", choices=["openface", "opencv", "pyfeat"], help="face source for raw media")
    p.add_argument("--limit", type=count, help="label at most this many samples")
    p.add_argument("--max-failure-rate", type=fraction,
                   help="exit 1 when more than this fraction of the table's rows is failed, earlier runs' "
                        "included (default label.max_failure_rate, 0.01)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="folder input: read links whose target is outside the folder (refused by default)")
    p.add_argument("--retry-failed", action="store_true", help="redo rows that failed in an earlier run")
    p.add_argument("--mlflow-uri", help="tracking/registry URI for models:/ (default: mlflow.tracking_uri)")
    p.add_argument("--llm-path", metavar="DIR", help="base LLM folder (models logged without their base)")
    add_config_options(p)
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser("infer", help="run a model on one video in this process (no Ray)")
    p.add_argument("video", help="video file (.mp4, .avi, ...)")
    p.add_argument("--audio", metavar="WAV", help="audio file (default: the video's own track)")
    p.add_argument("--subtitle", metavar="TEXT", help="what is said (default: none, or ASR with --asr)")
    p.add_argument("--model", required=True, metavar="URI", help=MODEL_HELP)
    add_question_options(p)
    p.add_argument("--face-npy", metavar="NPY", help="OpenFace face stack (default: detect faces in the frames)")
    p.add_argument("--asr", action="store_true", help="transcribe with the local Whisper when no --subtitle")
    p.add_argument("--models", metavar="DIR", help="encoders folder (clip/, hubert/[, whisper/])")
    p.add_argument("--seed", type=int, help="sampling seed (default: seed)")
    p.add_argument("--max-new-tokens", type=int,
                   help="new tokens per row (default: each task's own, label.max_new_tokens)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy")
    p.add_argument("--mlflow-uri", help="tracking/registry URI for models:/")
    p.add_argument("--llm-path", metavar="DIR", help="base LLM folder (models logged without their base)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_options(p)
    p.set_defaults(func=_cmd_infer)

    p = sub.add_parser("register", help="log a checkpoint as an MLflow model, register it and set the alias")
    p.add_argument("checkpoint", help="checkpoint folder (or a training run folder: its latest checkpoint)")
    p.add_argument("--mlflow-uri", help="tracking/registry URI (default: mlflow.tracking_uri or $MLFLOW_TRACKING_URI)")
    p.add_argument("--name", help="registered model name (default: mlflow.registered_model)")
    p.add_argument("--alias", help="alias to point at the new version (default: mlflow.alias)")
    p.add_argument("--no-bundle-base", action="store_true",
                   help="do not copy the base LLM into the model (records its path; the tiny base is always copied)")
    p.add_argument("--llm-path", metavar="DIR", help="base LLM folder (default: the path in the checkpoint)")
    add_config_options(p)
    p.set_defaults(func=_cmd_register)
