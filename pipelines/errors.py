"""`SampleError`: one sample's bad input, recorded as data (STYLE 2), never raised out of a worker."""

from __future__ import annotations


class SampleError(Exception):
    """A per-sample failure: ``kind`` groups the summary (``video/unreadable``), the message names the file."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def record(self) -> str:
        """The text stored in the ``error`` column: ``kind: message``."""
        return f"{self.kind}: {self.message}"


def error_kind(error: str) -> str:
    """The summary group of an ``error`` string (the part before the first ``": "``)."""
    return error.split(": ", 1)[0] if error else ""
