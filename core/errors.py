"""The errors a user can fix, and the one text format of a per-sample failure.

Every user-facing error derives from :class:`AffectFlowError`: the command line prints it as
``affectflow COMMAND: error: …`` and exits 2. Any other exception is a bug and keeps its
traceback. Per-sample failures are not raised out of a job: they are recorded as data in an
``error`` column as ``stage/kind: message`` (see :func:`format_error`).
"""

from __future__ import annotations

from core.redact import redact_text


class AffectFlowError(Exception):
    """An error the user can fix; the message names the file, row, key or reference at fault.

    Its text never shows a secret it was built from: credentials in URIs and quoted secret keys'
    values (a ``--storage-options`` JSON) are masked (`core.redact`), wherever it is printed.
    """

    def __str__(self) -> str:
        return redact_text(super().__str__())


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


def user_error(exc: BaseException | None) -> AffectFlowError | None:
    """The :class:`AffectFlowError` behind ``exc``: itself, or one raised in a Ray worker and carried
    across Ray's wrappers (a task's ``RayTaskError`` keeps it as ``cause``, Ray Train's
    ``WorkerGroupError`` per rank in ``worker_failures``) or chained as a cause; None when none is.

    The worker's own exception comes back, not Ray's copy whose message holds the remote traceback,
    so the command line prints its one-line message and exits 2 as for an error raised at home.
    """
    seen: set[int] = set()
    todo: list = [exc]
    while todo:
        err = todo.pop(0)
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        cause = getattr(err, "cause", None)
        cause = cause if isinstance(cause, BaseException) else None
        if isinstance(err, AffectFlowError) and cause is None:
            return err
        failures = getattr(err, "worker_failures", None)
        todo += [cause, *(failures.values() if isinstance(failures, dict) else ()),
                 getattr(err, "controller_failure", None), err.__cause__, err.__context__]
    return None


def format_error(kind: str, message: str) -> str:
    """The text stored in an ``error`` column: ``kind: message`` (``kind`` is ``stage/what``)."""
    return f"{kind}: {message}"


def error_kind(error: str) -> str:
    """The summary group of an ``error`` text: the part before the first ``": "`` (``video/missing``)."""
    return error.split(": ", 1)[0] if error else ""


def error_stage(error: str) -> str:
    """The stage of an ``error`` text: its kind up to the first ``/`` (``video``)."""
    return error_kind(error).split("/", 1)[0]
