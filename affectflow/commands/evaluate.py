"""Inference subcommands: ``affectflow evaluate`` (MER-UniBench scoring of one dataset)."""

from __future__ import annotations

import argparse
import json

from affectflow.options import add_config_options, config_from_args
from core.console import echo


def run_evaluate(
    dataset: str,
    gt: str,
    predictions: str,
    wheel_dir: str,
    extractor_path: str | None = None,
    extractor_batch_size: int = 16,
) -> dict:
    """Score one dataset, loading the LLM extractor from ``extractor_path`` when given."""
    from scoring.evaluate import evaluate

    extractor = None
    if extractor_path:
        from scoring.parse import LLMExtractor

        extractor = LLMExtractor(extractor_path, batch_size=extractor_batch_size)
    return evaluate(dataset, gt, predictions, wheel_dir, extractor=extractor)


def format_table(result: dict) -> str:
    """A small fixed-width table of the scores (x100)."""
    scores = result["scores"]
    rows = [(k, v) for k, v in scores.items() if isinstance(v, float)]
    lines = [f"{result['dataset']} ({result['metric']}, {result['counts']['gold']} samples)"]
    lines += [f"  {k:<10} {100 * v:6.2f}" for k, v in rows]
    for w in scores.get("per_wheel", []):
        cells = "  ".join(f"{k}={100 * v:.2f}" for k, v in w.items() if isinstance(v, float))
        lines.append(f"  wheel{w['wheel']}     {cells}  (n={w['n']})")
    return "\n".join(lines)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    extra = [f"score.wheel_dir={args.wheel}"] if args.wheel else []
    cfg = config_from_args(args, extra)
    result = run_evaluate(
        args.dataset,
        args.gt,
        args.predictions,
        cfg.score.wheel_dir,
        extractor_path=args.extractor,
        extractor_batch_size=cfg.label.batch_size,
    )
    if args.json:
        echo(json.dumps(result, sort_keys=True, indent=2))
    else:
        echo(format_table(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score predictions on one MER-UniBench dataset")
    p.add_argument(
        "--dataset",
        required=True,
        help="MER2023, MER2024, IEMOCAPFour, MELD, CMUMOSI, CMUMOSEI, SIMS, SIMSv2 or OVMERDPlus",
    )
    p.add_argument(
        "--gt",
        required=True,
        metavar="PATH",
        help="the dataset's label file (npz or name,openset CSV) or its folder",
    )
    p.add_argument(
        "--predictions",
        required=True,
        metavar="FILE",
        help="CSV/parquet (name + openset|text|sentiment) or a reference result .npz",
    )
    p.add_argument(
        "--wheel",
        metavar="DIR",
        help="emotion-wheel folder (config score.wheel_dir; default: the packaged files)",
    )
    p.add_argument(
        "--extractor",
        metavar="PATH",
        help="local Qwen2.5-Instruct checkpoint for free-text outputs",
    )
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_config_options(p)
    p.set_defaults(func=_cmd_evaluate)
