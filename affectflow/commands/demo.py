"""``affectflow demo``: the whole job on the embedded defaults, from tiny models to a MER-UniBench report
(`synth.demo`)."""

from __future__ import annotations

import argparse

from affectflow.options import add_config_options, config_from_args


def _cmd_demo(args: argparse.Namespace) -> int:
    from synth.demo import run_demo

    run_demo(config_from_args(args), n=args.n)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end job on the embedded defaults")
    add_config_options(p)
    p.add_argument("--n", type=int, default=96, help="synthetic training corpus size (default 96)")
    p.set_defaults(func=_cmd_demo)
