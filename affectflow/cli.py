"""The `affectflow` command line: one console script, a subcommand per job.

The top layer: it imports every package and nothing imports it. Each command family has a
module in :mod:`affectflow.commands` with ``register(subparsers)``; each subcommand calls a
plain function that tests call directly. Heavy imports (torch, ray, transformers) happen
inside the handlers so ``--help`` stays fast.

Errors: an :class:`core.errors.AffectFlowError` (bad config, input, store, model reference,
wheel or benchmark) is printed as ``affectflow COMMAND: error: …`` with exit code 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from affectflow.commands import benchmark, demo, evaluate, label, preprocess, released, setup, store, train
from core.errors import AffectFlowError

# The command families, in the order they appear in --help.
COMMANDS = (setup, demo, preprocess, store, train, released, label, evaluate, benchmark)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectflow",
        description="AffectGPT as infrastructure: preprocess, train, label and benchmark multimodal emotion models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except AffectFlowError as exc:
        print(f"affectflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"affectflow {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
