"""Load ``.npz`` files that hold pickled objects without running arbitrary pickles.

The reference's label files (``label.npz`` with ``test_corpus`` dicts) and result files
(``name2reason`` dicts; ``*-openset.npz`` with ``filenames``/``fileitems``) store object
arrays, which ``np.load(allow_pickle=True)`` would unpickle with full trust. We read the zip
members and ``.npy`` headers ourselves and unpickle object arrays with an unpickler that admits
only plain builtins and the numpy globals needed to rebuild arrays, dtypes and scalars.
"""

from __future__ import annotations

import codecs
import io
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format
from core.errors import InputError, MissingFileError


class UnsafeNpzError(InputError, pickle.UnpicklingError):
    """A pickle in an npz file asked for a global outside the allowed set."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    reconstruct, scalar = multiarray._reconstruct, multiarray.scalar
    allowed: dict[tuple[str, str], Any] = {}
    # Pickles written by numpy 1.x name numpy.core, by numpy 2.x numpy._core.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


# Protocol-0..3 pickles name set/frozenset as globals; py2 pickles say __builtin__.
_BUILTINS = {
    (module, name): obj
    for module in ("builtins", "__builtin__")
    for name, obj in (("set", set), ("frozenset", frozenset))
}
# Protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"): a pure conversion.
_BUILTINS[("_codecs", "encode")] = codecs.encode
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {**_numpy_globals(), **_BUILTINS}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only ``ALLOWED_GLOBALS`` and refuses everything else."""

    def __init__(self, file, *, source: str = "<pickle>"):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise UnsafeNpzError(
                f"{self.source}: refused to unpickle global {module}.{name} "
                "(only plain builtins and numpy arrays/dtypes/scalars are allowed)"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeNpzError(f"{self.source}: refused a persistent id in the pickle")


def restricted_loads(data: bytes, source: str = "<pickle>") -> Any:
    """Unpickle ``data`` with ``RestrictedUnpickler``."""
    return RestrictedUnpickler(io.BytesIO(data), source=source).load()


def _read_header(fp, source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(fp)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(fp)
        if version == (3, 0) and hasattr(npy_format, "_read_array_header"):
            return npy_format._read_array_header(fp, version)
    except ValueError as exc:  # numpy's "the magic string is not correct", a garbled header
        raise InputError(f"{source}: not a .npy array ({exc})") from None
    raise InputError(f"{source}: unsupported .npy format version {version}")


def read_npy(fp, source: str = "<npy>") -> np.ndarray:
    """One ``.npy`` stream; object arrays go through the restricted unpickler."""
    shape, fortran_order, dtype = _read_header(fp, source)
    if dtype.hasobject:
        try:
            array = RestrictedUnpickler(fp, source=source).load()
        except UnsafeNpzError:
            raise
        except (pickle.UnpicklingError, EOFError) as exc:  # a truncated or garbled pickle
            raise InputError(f"{source}: unreadable object array ({exc})") from None
        if not isinstance(array, np.ndarray):
            raise UnsafeNpzError(
                f"{source}: object payload is a {type(array).__name__}, not an array"
            )
        return array
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    data = fp.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise InputError(f"{source}: truncated array data")
    array = np.frombuffer(data, dtype=dtype, count=count).copy()
    if fortran_order:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (or a single ``.npy``) as ``{key: array}``, safely."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist")
    if path.suffix == ".npy":
        with open(path, "rb") as fp:
            return {path.stem: read_npy(fp, str(path))}
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InputError(f"{path} is not an .npz (zip) file") from None
    out: dict[str, np.ndarray] = {}
    with archive:
        for member in sorted(archive.namelist()):
            key = member[:-4] if member.endswith(".npy") else member
            try:
                with archive.open(member) as fp:
                    out[key] = read_npy(io.BufferedReader(fp), f"{path}[{key}]")
            except (zipfile.BadZipFile, zlib.error) as exc:  # a bad CRC, corrupt deflate data
                raise InputError(f"{path}[{key}]: corrupt zip member ({exc})") from None
    return out


def _plain(value: Any) -> Any:
    """0-d object arrays -> their object; other arrays -> lists; numpy scalars -> Python ones."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_key(path: str | Path, key: str) -> Any:
    """One entry of an ``.npz``, as plain Python data (``.tolist()`` of the array)."""
    arrays = load_npz(path)
    if key not in arrays:
        raise InputError(f"{path} has no array {key!r} (has {sorted(arrays)})")
    return _plain(arrays[key])


def load_name2reason(path: str | Path) -> dict[str, Any]:
    """A reference inference result file: ``{name: generated text}`` under key ``name2reason``."""
    value = load_key(path, "name2reason")
    if not isinstance(value, dict):
        raise InputError(f"{path}: 'name2reason' holds a {type(value).__name__}, expected a dict")
    return {str(k): v for k, v in value.items()}


def load_filenames_items(path: str | Path) -> dict[str, Any]:
    """Reference ``*-openset.npz``/``*-sentiment.npz``: ``{filename: item}`` from both arrays."""
    arrays = load_npz(path)
    for key in ("filenames", "fileitems"):
        if key not in arrays:
            raise InputError(f"{path} has no array {key!r} (has {sorted(arrays)})")
    names, items = arrays["filenames"].tolist(), arrays["fileitems"].tolist()
    if len(names) != len(items):
        raise InputError(f"{path}: {len(names)} filenames but {len(items)} fileitems")
    return {str(n): _plain(i) for n, i in zip(names, items, strict=True)}
