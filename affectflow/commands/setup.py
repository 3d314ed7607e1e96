"""Setup subcommands: ``tiny-models``, ``synth-corpus``, ``config show``."""

from __future__ import annotations

import argparse
from pathlib import Path

from affectflow.options import add_config_options, add_verbose_option
from core.config import dump_yaml
from core.console import echo


def tiny_models(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write tiny random CLIP, HuBERT and Qwen2 (+ tokenizer) checkpoints under ``out``."""
    from synth.tiny_models import build_tiny_models

    return build_tiny_models(out, seed=seed)


def synth_corpus(out: str | Path, n: int, seed: int = 0):
    """Write an ``n``-sample MER2025-layout corpus under ``out``; returns its summary."""
    from synth.corpus import write_corpus

    return write_corpus(out, n=n, seed=seed)


def config_show(config: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """The resolved config as YAML."""
    from core.config import load_config

    return dump_yaml(load_config(config, overrides))


def _cmd_tiny_models(args: argparse.Namespace) -> int:
    for name, path in tiny_models(args.out, seed=args.seed).items():
        echo(f"{name}: {path}")
    return 0


def _cmd_synth_corpus(args: argparse.Namespace) -> int:
    echo(synth_corpus(args.out, n=args.n, seed=args.seed))
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    echo(config_show(args.config, args.overrides), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiny-models", help="write tiny random CLIP/HuBERT/Qwen2 models of the real architectures")
    p.add_argument("out", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    add_verbose_option(p)
    p.set_defaults(func=_cmd_tiny_models)

    p = sub.add_parser("synth-corpus", help="write a small synthetic corpus in the MER2025 layout")
    p.add_argument("out", help="output directory (the corpus root)")
    p.add_argument("--n", type=int, default=48, help="number of samples (default 48)")
    p.add_argument("--seed", type=int, default=0)
    add_verbose_option(p)
    p.set_defaults(func=_cmd_synth_corpus)

    p = sub.add_parser("config", help="inspect the run configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    show = csub.add_parser("show", help="print the resolved config as YAML")
    add_config_options(show)
    show.set_defaults(func=_cmd_config_show)
