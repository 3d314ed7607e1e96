"""Restricted npz loading: good files round-trip, hostile ones are refused unexecuted."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from core.errors import InputError
from scoring.safe_npz import (
    UnsafeNpzError,
    load_filenames_items,
    load_key,
    load_name2reason,
    load_npz,
    restricted_loads,
)


class Payload:
    """A custom class: must never be rebuilt from a file."""

    ran = False

    def __setstate__(self, state):
        Payload.ran = True


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_dict_of_dicts_and_plain_arrays(tmp_path):
    corpus = {
        "Ses05F_a": {"emo": 2, "val": np.float64(-1.5)},
        "b": {"emo": "happy", "val": 0.5, "tags": {"x", "y"}},
    }
    path = tmp_path / "label.npz"
    np.savez(
        path,
        test_corpus=corpus,
        ints=np.arange(6, dtype=np.int16).reshape(2, 3),
        fortran=np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        words=np.array(["a", "bc"]),
    )
    assert load_key(path, "test_corpus") == corpus
    arrays = load_npz(path)
    np.testing.assert_array_equal(arrays["ints"], np.arange(6, dtype=np.int16).reshape(2, 3))
    np.testing.assert_array_equal(arrays["fortran"], np.arange(6.0).reshape(2, 3))
    assert arrays["words"].tolist() == ["a", "bc"]
    with pytest.raises(InputError, match="has no array 'nope'"):
        load_key(path, "nope")


def test_reference_result_files(tmp_path):
    np.savez(
        tmp_path / "checkpoint_000030.npz", name2reason={"a": "In the text, he smiles.", "b": "x"}
    )
    assert load_name2reason(tmp_path / "checkpoint_000030.npz") == {
        "a": "In the text, he smiles.",
        "b": "x",
    }
    np.savez_compressed(
        tmp_path / "checkpoint_000030-openset.npz",
        filenames=["a", "b"],
        fileitems=np.array(["[happy]", ["sad", "angry"]], dtype=object),
    )
    items = load_filenames_items(tmp_path / "checkpoint_000030-openset.npz")
    assert items == {"a": "[happy]", "b": ["sad", "angry"]}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_os_system_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    array = np.array([SystemCall(marker)], dtype=object)
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as zf:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(array))
        pickle.dump(array, buf, protocol=protocol)
        zf.writestr("x.npy", buf.getvalue())
    with pytest.raises(
        UnsafeNpzError, match=r"evil.npz\[x\].*refused to unpickle global (posix|nt|os)\.system"
    ):
        load_npz(path)
    assert not marker.exists()


def test_custom_class_is_refused(tmp_path):
    path = tmp_path / "custom.npz"
    np.savez(path, name2reason={"a": Payload()})
    with pytest.raises(UnsafeNpzError, match=r"custom.npz\[name2reason\].*test_safe_npz.Payload"):
        load_name2reason(path)
    assert Payload.ran is False


def test_other_callables_are_refused():
    with pytest.raises(UnsafeNpzError, match=r"(__builtin__|builtins)\.eval"):
        restricted_loads(pickle.dumps(eval, protocol=2))
    assert restricted_loads(
        pickle.dumps({"a": [1, 2.5, None, True, (3,)], "s": {1}}, protocol=2)
    ) == {"a": [1, 2.5, None, True, (3,)], "s": {1}}


def test_not_a_zip_and_missing_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not an .npz"):
        load_npz(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_npz(tmp_path / "none.npz")


def test_garbled_members_are_input_errors(tmp_path):
    path = tmp_path / "garbled.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", b"not an npy header")
    with pytest.raises(InputError, match=r"garbled.npz\[x\]: not a .npy array"):
        load_npz(path)
    array = np.array([{"a": 1}], dtype=object)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(array))
    pickle.dump(array, buf, protocol=2)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", buf.getvalue()[:-10])
    with pytest.raises(InputError, match=r"garbled.npz\[x\]: unreadable object array"):
        load_npz(path)


def test_loader_never_calls_np_load_with_pickles(monkeypatch, tmp_path):
    np.savez(tmp_path / "x.npz", name2reason={"a": "b"})
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load must not be used"))
    assert load_name2reason(tmp_path / "x.npz") == {"a": "b"}
