"""`SampleError`: one sample's bad input, recorded as data, never raised out of a worker."""

from __future__ import annotations

from core.errors import format_error


class SampleError(Exception):
    """A per-sample failure: ``kind`` groups the summary (``video/unreadable``), the message names the file."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def record(self) -> str:
        """The text stored in the ``error`` column: ``kind: message``."""
        return format_error(self.kind, self.message)
