"""Bounded face stacks (finding 6's rule, for the OpenFace .npy): a header declaring more data than
its file holds (3 TB in 64 bytes) fails its row before numpy allocates anything (it raised
MemoryError), and a file is mapped so that only the picked frames are read."""

from __future__ import annotations

import io

import numpy as np

from pipelines.faces import load_face_stack, sample_faces
from tests.security.bounded import run_child


def npy(path, header: dict, payload: bytes) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path.write_bytes(buf.getvalue() + payload)


def test_a_face_stack_declaring_3_tb_fails_its_row_in_bounded_memory(tmp_path):
    bad = tmp_path / "bad.npy"
    npy(bad, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 1000, 1000, 3)}, bytes(64))
    code = ("from pipelines.errors import SampleError\nfrom pipelines.faces import load_face_stack\n"
            f"try:\n    load_face_stack({str(bad)!r})\nexcept SampleError as exc:\n    print(exc.record())\n"
            f"try:\n    load_face_stack('named.npy', open({str(bad)!r}, 'rb').read())\n"
            "except SampleError as exc:\n    print(exc.record())\n")
    run = run_child(code, address_space_mb=2048, timeout_s=60)
    lines = run.out.strip().splitlines()
    assert run.returncode == 0 and len(lines) == 2, run.describe()
    assert all(x.startswith("face/unreadable") and "declares" in x for x in lines), run.describe()
    assert run.peak_rss_mb < 400, run.describe()


def test_a_good_stack_is_mapped_and_samples_as_when_read_whole(tmp_path):
    stack = np.random.default_rng(0).integers(0, 255, (40, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "good.npy", stack)
    mapped = load_face_stack(tmp_path / "good.npy")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(sample_faces(mapped, 8, 16), sample_faces(stack, 8, 16))
    np.testing.assert_array_equal(load_face_stack("x.npy", (tmp_path / "good.npy").read_bytes()), stack)
