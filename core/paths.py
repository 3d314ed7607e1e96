"""Paths, checked: output paths before any work starts (a job that would fail at its first write
after minutes of decoding or training fails at once instead, naming the path), and names and
relative paths read from files we do not trust, which must stay under their root."""

from __future__ import annotations

import os
import reprlib
import tempfile
from pathlib import Path

from core.errors import InputError


def absolute(path: str | Path | None) -> Path | str | None:
    """``path`` made absolute once, where a job's request is built (Ray workers run in other
    directories); an fsspec URL (``s3://...``) stays as given, None and "" give None. Links are
    not followed: a corpus root that is a link stays the root its rows are checked against."""
    if path is None or str(path) == "":
        return None
    if "://" in str(path):
        return str(path)
    return Path(os.path.abspath(Path(path).expanduser()))


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


def name_problem(name: object) -> str:
    """Why ``name`` cannot name a sample ("" when it can): the one check for every layout and reader.

    A sample name becomes a file stem under a corpus root (``video/{name}.mp4``), a key in a store
    and a row of a table, so it must stay one path component: no separator, no ``..``, no NUL, no
    outer spaces, not empty. ``..`` anywhere is refused (``..x`` too), as the readers always did.
    """
    if not isinstance(name, str) or not name.strip():
        return f"empty sample name {reprlib.repr(name)}"
    if "/" in name or "\\" in name or ".." in name or "\x00" in name or name != name.strip():
        return f"sample name {_short(name)} has a path separator, '..', NUL or outer spaces"
    return ""


def _short(text: str, limit: int = 200) -> str:
    """``repr(text)``, cut in the middle past ``limit`` characters (a name may come from a huge cell)."""
    return repr(text) if len(text) <= limit else repr(text[: limit // 2]) + "…" + repr(text[-limit // 2:])


def inside_root(root: str | Path, relative: str, what: str) -> Path:
    """``root / relative`` when it stays under ``root``, links resolved; else ``InputError`` naming ``what``.

    For paths read from files we do not trust (an MLmodel's artifact ``path``, a manifest's
    columns): an absolute path, a ``..`` that climbs out, or a symbolic link whose target lies
    outside ``root`` is refused.
    """
    text = str(relative)
    if not text or "\x00" in text or Path(text).is_absolute() or text.startswith(("/", "\\")):
        raise InputError(f"{what}: {text!r} is not a relative path under {root}")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if not target.is_relative_to(base):
        raise InputError(f"{what}: {text!r} leaves {root} (resolves to {target})")
    return target
