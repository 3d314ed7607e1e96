"""Load ``.npz`` files that hold pickled objects without running arbitrary pickles.

The reference's label files (``label.npz`` with ``test_corpus`` dicts) and result files
(``name2reason`` dicts; ``*-openset.npz`` with ``filenames``/``fileitems``) store object
arrays, which ``np.load(allow_pickle=True)`` would unpickle with full trust. We read the zip
members and ``.npy`` headers ourselves and unpickle object arrays with an unpickler that admits
only plain builtins and the numpy globals needed to rebuild arrays, dtypes and scalars.

These files come from elsewhere, so reading one is bounded too: members are decompressed one
at a time and only when asked for (:func:`load_key`, :func:`npz_keys`), each within
``MAX_MEMBER_BYTES`` and all within ``MAX_TOTAL_BYTES``; a header declaring more data than its
member holds is refused before allocating; a pickle is scanned before it is unpickled
(:func:`check_pickle`: objects it would expand to, nesting depth).
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


# Bounds on what one file may cost: a member's decompressed bytes (the zip header's claim is
# checked before reading, and reads stop there), all members together, and what a pickle may
# build. Reference label and result files are a few MB.
MAX_MEMBER_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 1024 * 2**20
# A pickle may build at most this many objects counted with repetition (a shared object counts
# once per reference) and nest at most this deep. Nested shared tuples (t1 = (t0, t0), ...) are
# tiny on disk but double per level when hashed, printed or walked; a real file is a tree of
# dicts, lists and strings, at most a few levels deep and about one object per byte.
MAX_PICKLE_DEPTH = 64
PICKLE_OBJECTS_PER_BYTE = 4
MIN_PICKLE_OBJECTS = 100_000


class _Node:
    """An object of the scanned pickle: how many objects it holds when expanded, and how deep."""

    __slots__ = ("size", "depth")

    def __init__(self, size: int = 1, depth: int = 0):
        self.size, self.depth = size, depth


# Opcodes that add to the object below their mark instead of making a new one.
_GROWS = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})


def check_pickle(data: bytes, source: str = "<pickle>") -> None:
    """Refuse a pickle whose objects would expand past the bounds above, before unpickling it.

    Walks the opcodes (``pickletools.genops``, linear in the bytes, nothing is built) over a
    stack of sizes: a memo reference pushes the same node again, so sharing is counted as the
    expansion it becomes. Raises ``InputError`` naming ``source``.
    """
    import pickletools

    limit = max(MIN_PICKLE_OBJECTS, PICKLE_OBJECTS_PER_BYTE * len(data))
    mark = object()
    stack: list = []
    memo: dict = {}

    def pop() -> list:
        out = []
        for item in reversed(op.stack_before):
            if item is pickletools.stackslice:
                while stack[-1] is not mark:
                    out.append(stack.pop())
            elif item is pickletools.markobject:
                if stack.pop() is not mark:
                    raise IndexError("no mark")
            else:
                out.append(stack.pop())
        return out[::-1]

    def check(node: _Node) -> _Node:
        if node.size > limit:
            raise InputError(f"{source}: the pickle expands to more than {limit:,} objects "
                             f"({len(data):,} bytes; nested shared objects?)")
        if node.depth > MAX_PICKLE_DEPTH:
            raise InputError(f"{source}: the pickle nests deeper than {MAX_PICKLE_DEPTH} levels")
        return node

    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "MARK":
                stack.append(mark)
            elif name in ("PROTO", "FRAME", "READONLY_BUFFER", "READWRITE_BUFFER"):
                continue
            elif name == "STOP":
                break
            else:
                args = pop()
                if name in _GROWS:
                    base, added = args[0], args[1:]
                    base.size += sum(a.size for a in added)
                    base.depth = max([base.depth, *(a.depth + 1 for a in added)])
                    stack.append(check(base))
                elif op.stack_after:
                    stack.append(check(_Node(1 + sum(a.size for a in args),
                                             max([0, *(a.depth + 1 for a in args)]))))
    except (ValueError, IndexError, KeyError, AttributeError) as exc:  # truncated or garbled opcodes
        raise InputError(f"{source}: unreadable object array ({type(exc).__name__}: {exc})") from None


def restricted_loads(data: bytes, source: str = "<pickle>") -> Any:
    """Unpickle ``data`` with ``RestrictedUnpickler``, after :func:`check_pickle`."""
    check_pickle(data, source)
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


def _read_exactly(fp, n: int, source: str) -> bytes:
    data = fp.read(n)
    if len(data) != n:
        raise InputError(f"{source}: truncated array data")
    return data


def read_npy(fp, source: str = "<npy>", size: int | None = None) -> np.ndarray:
    """One ``.npy`` stream of ``size`` bytes (None: up to ``MAX_MEMBER_BYTES``); object arrays go
    through :func:`check_pickle` and the restricted unpickler. A header that declares more data
    than the stream holds is refused before anything is allocated."""
    start = fp.tell() if size is not None else 0
    shape, fortran_order, dtype = _read_header(fp, source)
    room = (size - (fp.tell() - start)) if size is not None else MAX_MEMBER_BYTES
    if dtype.hasobject:
        data = fp.read(room + 1)
        if len(data) > room:
            raise InputError(f"{source}: its pickle is over {room:,} bytes")
        try:
            check_pickle(data, source)
            array = RestrictedUnpickler(io.BytesIO(data), source=source).load()
        except UnsafeNpzError:
            raise
        except (pickle.UnpicklingError, EOFError) as exc:  # a truncated or garbled pickle
            raise InputError(f"{source}: unreadable object array ({exc})") from None
        if not isinstance(array, np.ndarray):
            raise UnsafeNpzError(
                f"{source}: object payload is a {type(array).__name__}, not an array"
            )
        return array
    count = int(np.prod(shape, dtype=object)) if shape else 1
    nbytes = count * dtype.itemsize
    if nbytes > room:
        raise InputError(f"{source}: the header declares {shape} {dtype} ({nbytes:,} bytes) but the file "
                         f"holds {max(room, 0):,} bytes of data")
    array = np.frombuffer(_read_exactly(fp, nbytes, source), dtype=dtype, count=count).copy()
    if fortran_order:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


class _Npz:
    """An open ``.npz`` whose members are read one at a time, each within the byte bounds."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise MissingFileError(f"{path} does not exist")
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise InputError(f"{path} is not an .npz (zip) file") from None
        self.members = {(m[:-4] if m.endswith(".npy") else m): m for m in sorted(self.zip.namelist())}
        self.read_bytes = 0

    def __enter__(self) -> "_Npz":
        return self

    def __exit__(self, *exc) -> None:
        self.zip.close()

    def read(self, key: str) -> np.ndarray:
        source = f"{self.path}[{key}]"
        info = self.zip.getinfo(self.members[key])
        if info.file_size > MAX_MEMBER_BYTES:
            raise InputError(f"{source}: {info.file_size:,} bytes decompressed, over the "
                             f"{MAX_MEMBER_BYTES:,}-byte limit for one array")
        self.read_bytes += info.file_size
        if self.read_bytes > MAX_TOTAL_BYTES:
            raise InputError(f"{self.path}: its arrays hold over {MAX_TOTAL_BYTES:,} bytes decompressed")
        try:
            with self.zip.open(info) as fp:
                return read_npy(io.BufferedReader(fp), source, size=info.file_size)
        except (zipfile.BadZipFile, zlib.error) as exc:  # a bad CRC, corrupt deflate data
            raise InputError(f"{source}: corrupt zip member ({exc})") from None


def npz_keys(path: str | Path) -> list[str]:
    """The array names of an ``.npz`` (``.npy``: its stem), read from the zip's listing only."""
    path = Path(path)
    if path.suffix == ".npy":
        if not path.is_file():
            raise MissingFileError(f"{path} does not exist")
        return [path.stem]
    with _Npz(path) as npz:
        return list(npz.members)


def load_arrays(path: str | Path, keys: list[str]) -> dict[str, np.ndarray]:
    """Only the arrays ``keys`` of an ``.npz`` (others are never decompressed); a missing key is an InputError."""
    path = Path(path)
    if path.suffix == ".npy":
        arrays = load_npz(path)
    else:
        with _Npz(path) as npz:
            missing = [k for k in keys if k not in npz.members]
            if missing:
                raise InputError(f"{path} has no array {missing[0]!r} (has {sorted(npz.members)})")
            return {k: npz.read(k) for k in keys}
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise InputError(f"{path} has no array {missing[0]!r} (has {sorted(arrays)})")
    return {k: arrays[k] for k in keys}


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (or a single ``.npy``) as ``{key: array}``, safely and within the bounds."""
    path = Path(path)
    if path.suffix == ".npy":
        if not path.is_file():
            raise MissingFileError(f"{path} does not exist")
        with open(path, "rb") as fp:
            return {path.stem: read_npy(fp, str(path), size=path.stat().st_size)}
    with _Npz(path) as npz:
        return {key: npz.read(key) for key in npz.members}


def _plain(value: Any) -> Any:
    """0-d object arrays -> their object; other arrays -> lists; numpy scalars -> Python ones."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_key(path: str | Path, key: str) -> Any:
    """One entry of an ``.npz``, as plain Python data (``.tolist()`` of the array); no other member is read."""
    return _plain(load_arrays(path, [key])[key])


def load_name2reason(path: str | Path) -> dict[str, Any]:
    """A reference inference result file: ``{name: generated text}`` under key ``name2reason``."""
    value = load_key(path, "name2reason")
    if not isinstance(value, dict):
        raise InputError(f"{path}: 'name2reason' holds a {type(value).__name__}, expected a dict")
    return {str(k): v for k, v in value.items()}


def load_filenames_items(path: str | Path) -> dict[str, Any]:
    """Reference ``*-openset.npz``/``*-sentiment.npz``: ``{filename: item}`` from both arrays."""
    arrays = load_arrays(path, ["filenames", "fileitems"])
    names, items = arrays["filenames"].tolist(), arrays["fileitems"].tolist()
    if len(names) != len(items):
        raise InputError(f"{path}: {len(names)} filenames but {len(items)} fileitems")
    return {str(n): _plain(i) for n, i in zip(names, items, strict=True)}
