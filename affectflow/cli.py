"""The `affectflow` command line: one console script, a subcommand per job.

The top layer: it imports every package and nothing imports it. Each command family has a
module in :mod:`affectflow.commands` with ``register(subparsers)``; each subcommand calls a
plain function that tests call directly. Heavy imports (torch, ray, transformers) happen
inside the handlers so ``--help`` stays fast.

Output: each command runs inside :func:`core.console.command_console`. It prints its own
progress and summary (``core.console.echo`` and ``progress``); everything else (library logs and
warnings, Ray's messages, other progress bars) goes to a log file whose path it prints once, unless
``--verbose`` (before or after the command name) puts it all on the console.

Errors: an :class:`core.errors.AffectFlowError` (bad config, input, store, model reference,
wheel or benchmark) is printed as ``affectflow COMMAND: error: …`` with exit code 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from affectflow.commands import benchmark, demo, evaluate, label, preprocess, released, review, setup, store, train
from affectflow.options import add_verbose_option
from core.console import command_console
from core.errors import AffectFlowError

# The command families, in the order they appear in --help.
COMMANDS = (setup, demo, preprocess, store, train, released, label, evaluate, benchmark, review)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affectflow",
        description="AffectGPT as infrastructure: preprocess, train, label and benchmark multimodal emotion models.",
    )
    add_verbose_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The log file is named after the command and its action (store-inspect, config-show).
    name = "-".join([args.command, *(v for k, v in vars(args).items() if k.endswith("_command") and v)])
    console = None
    try:
        with command_console(name, verbose=args.verbose, argv=list(sys.argv[1:] if argv is None else argv)) as console:
            code = args.func(args)
    except AffectFlowError as exc:
        print(f"affectflow {args.command}: error: {exc}", file=sys.stderr)
        _name_log(console)
        return 2
    except KeyboardInterrupt:
        print(f"affectflow {args.command}: interrupted", file=sys.stderr)
        _name_log(console)
        return 130
    except BaseException:
        _name_log(console)
        raise
    return int(code or 0)


def _name_log(console) -> None:
    """After a failed command: where its log is, if it kept one."""
    note = console.take_log_note() if console is not None else None
    if note:
        print(note, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
