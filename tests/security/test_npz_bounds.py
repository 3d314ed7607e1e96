"""Finding 8: the restricted npz loader decompressed every member, a pickle of nested shared
tuples took time doubling per level (543 bytes: forever), and a header declaring 8 TB gave a bare
MemoryError. Each hostile file now fails as an InputError naming it, in bounded memory: each runs
in a child process under an address-space cap, whose peak RSS the failure message prints.

The hostile pickles are written opcode by opcode (the pickle format, protocol 2: PROTO 0x80,
EMPTY_DICT '}', BINUNICODE 'X', TUPLE1 0x85, TUPLE2 0x86, BINPUT 'q', BINGET 'h', POP '0',
BININT1 'K', SETITEM 's', STOP '.'), so that no Python object of their expanded size is ever built."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from scoring.safe_npz import MAX_MEMBER_BYTES, load_key, load_name2reason, load_npz, npz_keys
from tests.security.bounded import run_child

OBJECT_HEADER = {"descr": "|O", "fortran_order": False, "shape": (1,)}


def shared_tuple_key_pickle(levels: int) -> bytes:
    """``{t: 1}`` with t0 = ("x",), t_i = (t_{i-1}, t_{i-1}): hashing t_n visits 2**n tuples."""
    out = bytearray(b"\x80\x02}" + b"X\x01\x00\x00\x00x" + b"\x85" + b"q\x00" + b"0")
    for i in range(1, levels):
        out += b"h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"\x86" + b"q" + bytes([i])
        if i < levels - 1:
            out += b"0"
    return bytes(out + b"K\x01" + b"s" + b".")


def npz_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    return path


def npy_bytes(header: dict, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def child_load(call: str) -> str:
    return ("from core.errors import InputError\nfrom scoring.safe_npz import *\n"
            f"try:\n    print('loaded', type({call}).__name__)\nexcept InputError as exc:\n"
            "    print('InputError:', str(exc)[:300])\n")


def test_nested_shared_tuples_are_refused_before_unpickling(tmp_path):
    path = npz_with(tmp_path / "tuples.npz", {"name2reason": npy_bytes(OBJECT_HEADER, shared_tuple_key_pickle(64))})
    assert path.stat().st_size < 700
    run = run_child(child_load(f"load_name2reason({str(path)!r})"), address_space_mb=2048, timeout_s=30)
    assert run.returncode == 0 and "InputError:" in run.out, run.describe()
    assert "tuples.npz[name2reason]" in run.out and "expands to more than" in run.out, run.describe()
    assert run.seconds < 20 and run.peak_rss_mb < 400, run.describe()


def test_shared_lists_that_a_reader_would_expand_are_refused(tmp_path):
    nested: list = ["x"]
    for _ in range(48):
        nested = [nested, nested]  # 2**48 leaves once printed or walked; a few hundred bytes pickled
    np.savez(tmp_path / "lists.npz", name2reason={"a": nested})
    with pytest.raises(InputError, match=r"lists.npz\[name2reason\].*expands to more than"):
        load_name2reason(tmp_path / "lists.npz")


def test_deep_nesting_is_refused(tmp_path):
    deep: list = ["x"]
    for _ in range(150):
        deep = [deep]
    np.savez(tmp_path / "deep.npz", name2reason={"a": deep})
    with pytest.raises(InputError, match="nests deeper than"):
        load_name2reason(tmp_path / "deep.npz")


def test_a_header_declaring_8_tb_is_refused_before_allocating(tmp_path):
    header = {"descr": "|u1", "fortran_order": False, "shape": (8 * 10**12,)}
    npy = tmp_path / "huge.npy"
    npy.write_bytes(npy_bytes(header, b"\x00" * 16))
    npz = npz_with(tmp_path / "huge.npz", {"x": npy_bytes(header, b"\x00" * 16)})
    for path in (npy, npz):
        run = run_child(child_load(f"load_npz({str(path)!r})"), address_space_mb=2048, timeout_s=60)
        assert run.returncode == 0 and "InputError:" in run.out and "declares" in run.out, run.describe()
        assert run.peak_rss_mb < 400, run.describe()


def test_members_are_read_on_demand_and_a_zip_bomb_is_capped(tmp_path):
    """A 300 MB member of zeros (~300 KB deflated) beside a small label array: reading the label
    decompresses nothing else, listing the names decompresses nothing, and the bomb is refused."""
    size = MAX_MEMBER_BYTES + 2**20
    path = tmp_path / "bomb.npz"
    label = io.BytesIO()
    np.save(label, np.array([{"a": {"emo": "happy"}}], dtype=object)[0], allow_pickle=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("test_corpus.npy", label.getvalue())
        with zf.open("zeros.npy", "w", force_zip64=True) as fp:
            fp.write(npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (size,)}, b""))
            chunk = bytes(2**20)
            for _ in range(size // len(chunk)):
                fp.write(chunk)
    assert path.stat().st_size < 2 * 2**20
    assert sorted(npz_keys(path)) == ["test_corpus", "zeros"]
    run = run_child(child_load(f"load_key({str(path)!r}, 'test_corpus')") + "print(load_key("
                    f"{str(path)!r}, 'test_corpus'))\n", address_space_mb=2048, timeout_s=60)
    assert run.returncode == 0 and "{'a': {'emo': 'happy'}}" in run.out, run.describe()
    assert run.peak_rss_mb < 200, run.describe()
    run = run_child(child_load(f"load_npz({str(path)!r})"), address_space_mb=2048, timeout_s=60)
    assert "InputError:" in run.out and "bomb.npz[zeros]" in run.out and "limit" in run.out, run.describe()
    assert run.peak_rss_mb < 200, run.describe()


def test_a_real_sized_label_file_still_loads(tmp_path):
    """5,000 samples with repeated keys (memo references): well within the object bound."""
    corpus = {f"sample_{i:05d}": {"emo": "happy" if i % 2 else "sad", "val": float(i % 5) - 2} for i in range(5000)}
    np.savez(tmp_path / "label.npz", test_corpus=corpus)
    assert load_key(tmp_path / "label.npz", "test_corpus") == corpus
    assert set(load_npz(tmp_path / "label.npz")) == {"test_corpus"}
