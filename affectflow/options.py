"""Command-line options shared by the subcommands that run a job: ``--config`` and ``--set``."""

from __future__ import annotations

import argparse
from typing import Sequence

from core.config import Config, load_config


def add_verbose_option(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``-v/--verbose``: everything on the console (library logs, warnings, Ray workers' output) instead of
    the log file.

    On the top-level parser (``top``) it defaults to off; on a subcommand it is only set when given,
    so ``affectflow -v demo`` and ``affectflow demo -v`` mean the same.
    """
    parser.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show library logs, warnings and Ray workers' output on the console "
                             "(default: only this command's progress and summary; the rest goes to a log file)")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, repeatable ``--set a.b=c`` and ``--verbose``, shared by every subcommand that runs a job."""
    add_verbose_option(parser)
    parser.add_argument("--config", metavar="FILE", help="YAML run config (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config value, e.g. --set train.lr=2e-5 (repeatable)",
    )


# Config keys that options set, so an error in a value given as an option names the option.
OPTION_KEYS = {"label.labels": "--labels", "label.valence_range": "--valence-range", "label.task": "--task",
               "label.question": "--question", "label.decoding": "--decoding"}


def config_from_args(args: argparse.Namespace, extra: Sequence[str] = ()) -> Config:
    """Resolve ``--config``/``--set`` plus overrides implied by explicit flags (``extra``, applied last)."""
    from core.errors import ConfigError

    try:
        return load_config(getattr(args, "config", None), [*getattr(args, "overrides", []), *extra])
    except ConfigError as exc:
        text = str(exc)
        for key, option in OPTION_KEYS.items():
            given = getattr(args, option[2:].replace("-", "_"), None)
            if text.startswith(key) and given is not None:
                raise ConfigError(f"{option} {given!r}: {text}") from None
        raise


TASK_HELP = ("ov, description, sentiment, valence, closed, both (ov + description) or a comma list "
             "(default: label.task, ov)")


def add_question_options(parser: argparse.ArgumentParser) -> None:
    """What to ask and how to decode: ``--task``, ``--question``, ``--labels``, ``--valence-range``, ``--decoding``."""
    parser.add_argument("--task", help=TASK_HELP)
    parser.add_argument("--question", metavar="TEXT",
                        help="ask your own question instead of a task's (recorded per row; task 'question')")
    parser.add_argument("--labels", metavar="A,B,...", help="candidate labels of the closed-set task (label.labels)")
    parser.add_argument("--valence-range", metavar="LOW,HIGH",
                        help="the range the valence task asks for, e.g. --valence-range=-3,3 "
                             "(label.valence_range; default -1,1)")
    parser.add_argument("--decoding", choices=["greedy", "released"],
                        help="greedy (default), or released: sampling at T 1 / top-p 0.9 as the release, seeded")


def question_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides for the options of :func:`add_question_options` that were given."""
    extra = []
    for flag, key in (("task", "label.task"), ("question", "label.question"), ("labels", "label.labels"),
                      ("decoding", "label.decoding")):
        value = getattr(args, flag, None)
        if value is not None:
            extra.append(f"{key}={value}")
    if getattr(args, "valence_range", None):
        extra.append(f"label.valence_range=[{args.valence_range}]")
    return extra


def count(text: str) -> int:
    """An argparse type: an integer >= 0 (``--limit -1`` would silently drop the last sample)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number within [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number within [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value}")
    return value


def failure_gate(summary, limit: float, command: str) -> int:
    """Exit code 1 (with why and how to retry) when the output's whole state fails more than ``limit``."""
    from core.console import echo
    from pipelines.summary import STATE_EXAMPLES

    rate = summary.state_failure_rate
    if rate <= limit:
        return 0
    failed = summary.state_failed if summary.state_failed >= 0 else summary.failed
    shown = [f"  {name}: {str(error)[:200]}" for name, error in summary.state_examples[:STATE_EXAMPLES]]
    more = [f"  ... and {failed - len(shown)} more" if failed > len(shown) else ""] if shown else []
    echo("\n".join([
        f"affectflow {command}: {failed} failed ({100 * rate:.2f}% of the {summary.holder}, this run's and earlier "
        f"ones') exceeds --max-failure-rate {100 * limit:.2f}%" + ("; the failures recorded:" if shown else ""),
        *shown, *filter(None, more),
        f"fix {'those inputs' if shown else 'the failed inputs'}, then rerun with --retry-failed"]))
    return 1
