"""The `affectflow` command line: one console script, a subcommand per job.

Each package registers its own subcommands from its ``cli`` module (``register(subparsers)``),
and each subcommand calls a plain function that tests call directly. Heavy imports
(torch, ray, transformers) happen inside the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from affectflow.config import Config, ConfigError, load_config

# Modules that own subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "affectflow.commands",
    "pipelines.cli",
    "features.cli",
    "training.cli",
    "inference.cli",
    "inference.benchmark_cli",
)


class UserError(Exception):
    """An error the user can fix (bad path, bad input); printed without a traceback."""


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set a.b=c``, shared by every subcommand that runs a job."""
    parser.add_argument("--config", metavar="FILE", help="YAML run config (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config value, e.g. --set train.lr=2e-5 (repeatable)",
    )


def config_from_args(args: argparse.Namespace, extra: Sequence[str] = ()) -> Config:
    """Resolve ``--config``/``--set`` plus overrides implied by explicit flags (``extra``, applied last)."""
    return load_config(getattr(args, "config", None), [*getattr(args, "overrides", []), *extra])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectflow",
        description="AffectGPT as infrastructure: preprocess, train, label and benchmark multimodal emotion models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A package that has not grown a CLI yet; any other missing module is a real error.
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except (ConfigError, UserError, FileNotFoundError) as exc:
        print(f"affectflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"affectflow {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
