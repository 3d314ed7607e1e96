"""Output paths, checked before any work starts: a job that would fail at its first write after
minutes of decoding or training fails at once instead, naming the path."""

from __future__ import annotations

import tempfile
from pathlib import Path

from core.errors import InputError


def require_writable(path: str | Path, what: str, *, folder: bool) -> None:
    """Raise ``InputError`` unless ``path`` can be created or written (local paths; URLs pass).

    ``folder``: the output is a folder (a store, a run folder), so an existing regular file is
    refused; otherwise it is a file, so an existing folder is refused. The nearest existing
    ancestor must be a folder we can create files in (tried, not guessed from permission bits).
    """
    text = str(path)
    if "://" in text:
        return
    p = Path(text).absolute()
    if p.exists():
        if folder and not p.is_dir():
            raise InputError(f"{what} {path} is a file, not a folder: choose another path")
        if not folder and p.is_dir():
            raise InputError(f"{what} {path} is a folder: give a file path")
    ancestor = p if (folder and p.is_dir()) else p.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{what} {path}: {ancestor} is a file, so nothing can be created under it")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write in {ancestor} ({exc.strerror or exc})") from None
