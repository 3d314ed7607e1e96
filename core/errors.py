"""The errors a user can fix, and the one text format of a per-sample failure.

Every user-facing error derives from :class:`AffectFlowError`: the command line prints it as
``affectflow COMMAND: error: …`` and exits 2. Any other exception is a bug and keeps its
traceback. Per-sample failures are not raised out of a job: they are recorded as data in an
``error`` column as ``stage/kind: message`` (see :func:`format_error`).
"""

from __future__ import annotations


class AffectFlowError(Exception):
    """An error the user can fix; the message names the file, row, key or reference at fault."""


class ConfigError(AffectFlowError, ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


class InputError(AffectFlowError, ValueError):
    """A bad path, argument or input file (a corpus, a table, a predictions file)."""


class MissingFileError(InputError, FileNotFoundError):
    """A path the user named (or a file a layout requires) that does not exist."""


class StoreError(AffectFlowError, ValueError):
    """A feature store that is missing, malformed, or lacks the features asked for."""


class ModelRefError(AffectFlowError, ValueError):
    """A model reference (folder, run, MLflow URI) that cannot be resolved or loaded."""


class WheelError(AffectFlowError, ValueError):
    """Emotion-wheel files that are missing or malformed."""


class BenchmarkError(AffectFlowError, ValueError):
    """A MER-UniBench folder or run that cannot be scored as asked."""


class TrackingError(AffectFlowError):
    """An MLflow tracking server that does not answer; the message names its URI."""


class TrainingError(AffectFlowError):
    """A training run that cannot go on (e.g. a non-finite loss); the message names the step and value."""


def format_error(kind: str, message: str) -> str:
    """The text stored in an ``error`` column: ``kind: message`` (``kind`` is ``stage/what``)."""
    return f"{kind}: {message}"


def error_kind(error: str) -> str:
    """The summary group of an ``error`` text: the part before the first ``": "`` (``video/missing``)."""
    return error.split(": ", 1)[0] if error else ""


def error_stage(error: str) -> str:
    """The stage of an ``error`` text: its kind up to the first ``/`` (``video``)."""
    return error_kind(error).split("/", 1)[0]
