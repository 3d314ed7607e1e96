"""The synthetic MER-UniBench generator (`synth.unibench`): folders the readers take, emotions the
media carry, and the same bytes for the same seed. (The readers themselves are checked against the
release's layouts in tests/scoring/test_unibench_layouts.py, independently of this generator.)"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from pipelines.manifest import read_unibench
from scoring.unibench import DATASETS
from synth.unibench import DEFAULT_DATASETS, write_unibench

N = 3


@pytest.fixture(scope="module")
def unibench(tmp_path_factory):
    """The five formats the demo writes, three test samples each (IEMOCAP also gets sessions 1-4)."""
    return write_unibench(tmp_path_factory.mktemp("unibench"), N, seed=0, datasets=list(DEFAULT_DATASETS))


def test_default_datasets_are_the_five_formats():
    assert DEFAULT_DATASETS == ("MER2023", "IEMOCAPFour", "MELD", "CMUMOSI", "OVMERDPlus")


def test_the_readers_take_every_written_dataset(unibench):
    for name in DEFAULT_DATASETS:
        rows = read_unibench(name, unibench.root)
        assert [r.name for r in rows] == unibench.test_names[name] and len(rows) == N
        assert all(r.error == "" and r.video and r.audio and r.face and r.subtitle for r in rows)


def test_media_carry_the_emotion(unibench):
    """The rendered emotion is recoverable: a face stack's mean colour is nearest its tint."""
    from synth.corpus import EMOTIONS, TINT_RGB

    for name in DEFAULT_DATASETS:
        rows = read_unibench(name, unibench.root)
        for r in rows:
            bgr = np.load(r.face)
            assert bgr.dtype == np.uint8 and bgr.shape[1:] == (112, 112, 3)
            rgb = bgr[..., ::-1].reshape(-1, 3).mean(0)
            # Blending pulls every face toward its tint; the direction of the pull gives it away.
            shown = unibench.emotions[name][r.name]
            scores = {e: float(np.dot(rgb - rgb.mean(), np.subtract(TINT_RGB[e], 128)))
                      for e in EMOTIONS if e != "neutral"}
            if shown != "neutral":
                assert max(scores, key=scores.get) == shown


def test_same_seed_same_label_files(tmp_path):
    a = write_unibench(tmp_path / "a", 2, seed=3, datasets=["MELD", "OVMERDPlus"])
    b = write_unibench(tmp_path / "b", 2, seed=3, datasets=["MELD", "OVMERDPlus"])
    for name in ("MELD", "OVMERDPlus"):
        ds = DATASETS[name]
        fa, fb = a.datasets[name] / ds.label_file, b.datasets[name] / ds.label_file
        if fa.suffix == ".npz":
            with zipfile.ZipFile(fa) as za, zipfile.ZipFile(fb) as zb:
                assert {n: za.read(n) for n in za.namelist()} == {n: zb.read(n) for n in zb.namelist()}
        else:
            assert fa.read_bytes() == fb.read_bytes()
        faces = sorted((a.datasets[name] / ds.face_folder).rglob("*.npy"))
        assert len(faces) == 2
        for f in faces:
            assert f.read_bytes() == (b.datasets[name] / f.relative_to(a.datasets[name])).read_bytes()
