"""``affectflow import-released``: the released AffectGPT weights as our checkpoint (and, optionally, a
registered model)."""

from __future__ import annotations

import argparse

from affectflow.options import add_config_options, config_from_args
from core.console import echo


def _cmd_import_released(args: argparse.Namespace) -> int:
    from modeling.released import import_released

    given = (("mlflow.tracking_uri", args.mlflow_uri), ("mlflow.registered_model", args.register),
             ("mlflow.alias", args.alias))
    extra = [f"{key}={value}" for key, value in given if value]
    cfg = config_from_args(args, extra)
    result = import_released(args.checkpoint, args.llm, args.out, visual=args.visual)
    echo(f"imported {result.source} (epoch {result.epoch}, sha256 {result.sha256[:16]}…)\n"
         f"  {result.used} tensors mapped onto the fusion and LoRA weights; visual stream: {result.visual_stream}\n"
         f"  dropped on purpose: {', '.join(result.dropped) or '-'} (the unused image projector)\n"
         f"  checkpoint: {result.out}  (use it as --model)")
    if not args.register:
        return 0
    from registry.register import log_and_register

    tags = {"affectflow.source_sha256": result.sha256, "affectflow.visual_stream": result.visual_stream,
            "affectflow.source_epoch": "" if result.epoch is None else str(result.epoch),
            "affectflow.source_file": result.source.name}
    registered = log_and_register(result.out, cfg, bundle_base=args.bundle_base, tags=tags)
    return 0 if registered is not None else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-released", help="import a released AffectGPT checkpoint_*.pth as our checkpoint")
    p.add_argument("checkpoint", metavar="CKPT.pth", help="released checkpoint (read with weights_only: no code runs)")
    p.add_argument("--llm", required=True, metavar="QWEN_DIR", help="local Qwen2.5-7B-Instruct folder (its base LLM)")
    p.add_argument("--out", required=True, metavar="DIR", help="new checkpoint folder (must not exist or be empty)")
    p.add_argument("--visual", choices=["face", "frame"],
                   help="visual stream, when the file's config does not name it (face_or_frame)")
    p.add_argument("--register", metavar="NAME", help="also log it to MLflow and register it under NAME")
    p.add_argument("--alias", help="alias for the registered version (default: mlflow.alias)")
    p.add_argument("--bundle-base", action="store_true",
                   help="copy the base LLM into the registered model (default: record its path; a 7B base is 15 GB)")
    p.add_argument("--mlflow-uri", help="tracking/registry URI (default: mlflow.tracking_uri or $MLFLOW_TRACKING_URI)")
    add_config_options(p)
    p.set_defaults(func=_cmd_import_released)
