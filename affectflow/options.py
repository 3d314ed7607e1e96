"""Command-line options shared by the subcommands that run a job: ``--config`` and ``--set``."""

from __future__ import annotations

import argparse
from typing import Sequence

from core.config import Config, load_config


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
