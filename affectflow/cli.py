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
wheel or benchmark) is printed as ``affectflow COMMAND: error: …`` with exit code 2, also when it
was raised in a Ray worker (`core.errors.user_error` finds it behind Ray's wrappers); any other
exception is a bug and keeps its traceback. Ctrl-C exits 130 at any moment: as the console script,
the command stops the Ray instance it started before its console closes, so Ray's shutdown messages
go to the log and an interrupt during that shutdown is still a clean 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

from affectflow.commands import benchmark, demo, evaluate, label, preprocess, released, review, setup, store, train
from affectflow.options import add_verbose_option
from core.console import command_console
from core.errors import user_error

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
            try:
                code = args.func(args)
            finally:
                if argv is None:  # the console script: Ray's shutdown inside the console, not at exit
                    _stop_own_ray()
    except KeyboardInterrupt:
        print(f"affectflow {args.command}: interrupted", file=sys.stderr)
        _name_log(console)
        return _exit_code(argv, 130)
    except Exception as exc:
        error = user_error(exc)
        if error is None:
            _name_log(console)
            raise
        print(f"affectflow {args.command}: error: {error}", file=sys.stderr)
        _name_log(console)
        return _exit_code(argv, 2)
    except BaseException:
        _name_log(console)
        raise
    return _exit_code(argv, int(code or 0))


def _stop_own_ray() -> None:
    """Stop the local Ray instance this process started (`core.runtime.init_ray`); a joined cluster stays."""
    from core.runtime import shutdown_ray

    shutdown_ray()


def _exit_code(argv, code: int) -> int:
    """The code to exit with; as the console script, a Ctrl-C from here on exits 130 without a traceback
    (Python's own exit, atexit handlers included, could otherwise print one and exit 0)."""
    if argv is None:
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    return code


def _name_log(console) -> None:
    """After a failed command: where its log is, if it kept one."""
    note = console.take_log_note() if console is not None else None
    if note:
        print(note, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
