"""Benchmark subcommands: ``affectflow benchmark`` (label + score MER-UniBench, write the report)
and ``affectflow synth-unibench`` (synthetic ``*-process`` folders for tests and the demo)."""

from __future__ import annotations

import argparse

from affectflow.commands.evaluate import add_scoring_options, scoring_overrides
from affectflow.options import add_config_options, add_verbose_option, config_from_args
from core.console import echo, progress


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from inference.benchmark import BenchmarkRequest, benchmark

    extra = [f"score.wheel_dir={args.wheel}"] if args.wheel else []
    if args.batch_size is not None:
        extra.append(f"label.batch_size={args.batch_size}")
    if args.seed is not None:
        extra.append(f"seed={args.seed}")
    if args.question:
        extra.append(f"label.question={args.question}")
    if args.decoding:
        extra.append(f"label.decoding={args.decoding}")
    cfg = config_from_args(args, extra + scoring_overrides(args))
    datasets = [d for item in args.datasets or [] for d in item.split(",") if d.strip()]
    request = BenchmarkRequest(tuple(args.model), args.unibench_root, args.out, cfg, datasets=tuple(datasets),
                               extractor=args.extractor, encoders=args.models)
    with progress("label MER-UniBench", unit="samples") as bar:
        scores = benchmark(request, progress=bar)
    from scoring.report import markdown

    echo(markdown(scores), end="")
    echo(f"wrote {args.out}/scores.json, scores.md, report.html")
    return 0


def _cmd_synth_unibench(args: argparse.Namespace) -> int:
    from synth.unibench import ALL_DATASETS, write_unibench

    datasets = [d for item in args.datasets or [] for d in item.split(",") if d.strip()]
    if [d.lower() for d in datasets] == ["all"]:
        datasets = list(ALL_DATASETS)
    echo(write_unibench(args.out, args.n, seed=args.seed, datasets=datasets or None))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="label and score MER-UniBench; write scores and a report")
    p.add_argument("--model", action="append", required=True, metavar="URI",
                   help="checkpoint dir or models:/name@alias; repeat to pick the best per dataset")
    p.add_argument("--unibench-root", required=True, metavar="PATH",
                   help="folder holding the *-process dataset folders")
    p.add_argument("--datasets", nargs="+", metavar="NAME",
                   help="datasets to run (default: every folder found under the root)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--extractor", metavar="PATH",
                   help="local Qwen2.5-Instruct for free-text outputs (and --sentiment llm)")
    p.add_argument("--batch-size", type=int, help="labeling batch size (config label.batch_size)")
    p.add_argument("--seed", type=int, help="seed (config seed)")
    p.add_argument("--question", metavar="TEXT",
                   help="ask this instead of the OV question (zero-shot; the answers are scored as OV labels)")
    p.add_argument("--decoding", choices=["greedy", "released"],
                   help="greedy (default), or released: sampling at T 1 / top-p 0.9 as the release, seeded")
    p.add_argument("--wheel", metavar="DIR",
                   help="emotion-wheel folder (config score.wheel_dir; default: the packaged files)")
    p.add_argument("--models", metavar="DIR",
                   help="folder with the clip/ and hubert/ encoders (default: as affectflow label)")
    add_scoring_options(p)
    add_config_options(p)
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser("synth-unibench", help="write synthetic MER-UniBench *-process folders")
    p.add_argument("out", help="output folder (the MER-UniBench root)")
    p.add_argument("--n", type=int, default=8, help="test samples per dataset (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", nargs="+", metavar="NAME",
                   help="default: MER2023 IEMOCAPFour MELD CMUMOSI OVMERDPlus; 'all': the nine sets")
    add_verbose_option(p)
    p.set_defaults(func=_cmd_synth_unibench)
