"""MER-UniBench readers on synthetic ``*-process`` folders written in the real formats."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import BenchmarkError
from synth.unibench import DEFAULT_DATASETS, write_unibench
from scoring.safe_npz import load_npz
from scoring.unibench import DATASETS, load_gold
from pipelines.manifest import read_unibench

N = 3


@pytest.fixture(scope="module")
def unibench(tmp_path_factory):
    """All nine datasets, three test samples each (IEMOCAP also gets sessions 1-4)."""
    root = tmp_path_factory.mktemp("unibench")
    return write_unibench(root, N, seed=0, datasets=list(DATASETS))


def test_default_datasets_are_the_five_formats():
    assert DEFAULT_DATASETS == ("MER2023", "IEMOCAPFour", "MELD", "CMUMOSI", "OVMERDPlus")


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_reader_every_dataset(unibench, dataset):
    ds = DATASETS[dataset]
    rows = read_unibench(dataset, unibench.root)
    assert [r.name for r in rows] == unibench.test_names[dataset]
    assert len(rows) == N
    folder = unibench.root / ds.folder
    for r in rows:
        assert r.error == ""
        assert Path(r.video) == folder / ds.video_folder / f"{r.name}{ds.video_ext[0]}"
        assert Path(r.audio) == folder / ds.audio_folder / f"{r.name}.wav"
        nested = folder / ds.face_folder / r.name / f"{r.name}.npy"
        assert Path(r.face) == (nested if dataset == "OVMERDPlus" else folder / ds.face_folder / f"{r.name}.npy")
        assert r.subtitle
        if ds.metric == "sentiment":
            assert r.openset == []
        else:
            assert r.openset and all(w == w.lower() for w in r.openset)
    # The dataset folder itself is accepted as the root too.
    assert [r.name for r in read_unibench(dataset, folder)] == [r.name for r in rows]


def test_label_files_are_pickled_dicts_in_the_real_keys(unibench):
    """np.savez of dicts (object arrays), under the reference's keys, with its value types."""
    for name in DEFAULT_DATASETS:
        ds = DATASETS[name]
        path = unibench.root / ds.folder / ds.label_file
        if ds.label_key is None:
            df = pd.read_csv(path, keep_default_na=False)
            assert list(df.columns) == ["name", "openset"]
            assert all(v.startswith("[") and v.endswith("]") for v in df["openset"])
            continue
        arrays = np.load(path, allow_pickle=True)  # our own file: trusted here
        corpus = arrays[ds.label_key].item()
        assert arrays[ds.label_key].dtype == object and isinstance(corpus, dict)
        entry = next(iter(corpus.values()))
        if ds.metric == "sentiment":
            assert set(entry) == {"val"} and isinstance(entry["val"], float)
        elif ds.label_names:
            assert isinstance(entry["emo"], int)
        else:
            assert entry["emo"] in ("neutral", "angry", "happy", "sad", "worried", "surprise")
        # The restricted loader reads it too.
        assert ds.label_key in load_npz(path)


def test_iemocap_split_is_session_5(unibench):
    ds = DATASETS["IEMOCAPFour"]
    corpus = np.load(unibench.root / ds.folder / ds.label_file, allow_pickle=True)
    whole = corpus["whole_corpus"].item()
    sessions = sorted({n[4] for n in whole})
    assert sessions == ["1", "2", "3", "4", "5"]
    rows = read_unibench("iemocap", unibench.root)
    assert rows and all(r.name[4] == "5" for r in rows)
    assert len(rows) == sum(n[4] == "5" for n in whole) < len(whole)
    # Non-test samples have media too (a real folder has all sessions).
    assert all((unibench.root / ds.folder / ds.video_folder / f"{n}.avi").is_file() for n in whole)
    labels = {r.openset[0] for r in rows}
    assert labels <= set(ds.label_names)


def test_transcripts_and_gold_agree_with_the_table(unibench):
    for name in ("MER2023", "MER2024", "OVMERDPlus"):
        ds = DATASETS[name]
        df = pd.read_csv(unibench.root / ds.folder / ds.transcript_file, keep_default_na=False)
        assert ds.transcript_column in df.columns and "name" in df.columns
    mer = pd.read_csv(unibench.root / "mer2023-dataset-process/transcription-engchi-polish.csv")
    assert list(mer.columns) == ["name", "chinese", "english"]
    gold = load_gold("MELD", unibench.root / DATASETS["MELD"].folder)
    rows = read_unibench("MELD", unibench.root)
    assert {r.name: r.openset[0] for r in rows} == gold


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
                assert {n: za.read(n) for n in za.namelist()} == {
                    n: zb.read(n) for n in zb.namelist()
                }
        else:
            assert fa.read_bytes() == fb.read_bytes()
        faces = sorted((a.datasets[name] / ds.face_folder).rglob("*.npy"))
        assert len(faces) == 2
        for f in faces:
            assert f.read_bytes() == (b.datasets[name] / f.relative_to(a.datasets[name])).read_bytes()


def test_clear_errors(unibench, tmp_path):
    with pytest.raises(FileNotFoundError, match="meld-process"):
        read_unibench("MELD", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_unibench("MELD", tmp_path / "nowhere")
    with pytest.raises(BenchmarkError, match="unknown MER-UniBench dataset 'NOPE'"):
        read_unibench("NOPE", unibench.root)
    ds = DATASETS["MELD"]
    copy = tmp_path / "copy"
    shutil.copytree(unibench.root / ds.folder, copy / ds.folder)
    (copy / ds.folder / ds.transcript_file).unlink()
    with pytest.raises(FileNotFoundError, match="transcription-engchi-polish.csv"):
        read_unibench("MELD", copy)
    shutil.rmtree(copy / ds.folder / ds.video_folder)
    shutil.copy(unibench.root / ds.folder / ds.transcript_file, copy / ds.folder)
    with pytest.raises(FileNotFoundError, match="subvideo"):
        read_unibench("MELD", copy)
    (copy / ds.folder / ds.video_folder).mkdir()
    rows = read_unibench("MELD", copy)
    assert all(r.error.startswith("manifest/missing-file") and "subvideo" in r.error for r in rows)
    (copy / ds.folder / ds.label_file).unlink()
    with pytest.raises(FileNotFoundError, match="label.npz"):
        read_unibench("MELD", copy)


def test_ov_merd_plus_is_read_in_the_mer2025_ov_layout(unibench):
    """Subtitles from subtitle_chieng.csv's `english` column, faces at openface_face/{name}/{name}.npy."""
    import csv

    ds = DATASETS["OVMERDPlus"]
    folder = unibench.root / ds.folder
    assert (ds.transcript_file, ds.transcript_column) == ("subtitle_chieng.csv", "english")
    with open(folder / "subtitle_chieng.csv", newline="", encoding="utf-8") as f:
        english = {row["name"]: row["english"] for row in csv.DictReader(f)}
    for r in read_unibench("OVMERDPlus", unibench.root):
        assert r.subtitle == english[r.name].strip() and r.face.endswith(f"openface_face/{r.name}/{r.name}.npy")
        assert Path(r.face).is_file()


def test_an_na_transcript_cell_is_an_empty_subtitle_as_in_the_release(unibench, tmp_path):
    """The release reads the transcript with pandas' read_csv and makes a missing cell "" (e.g.
    my_affectgpt/datasets/datasets/cmumosi.py lines 53-57): a subtitle "NA" or "null" is no subtitle."""
    ds = DATASETS["MER2023"]
    folder = tmp_path / ds.folder
    shutil.copytree(unibench.root / ds.folder, folder)
    path = folder / ds.transcript_file
    df = pd.read_csv(path, keep_default_na=False, dtype=str)
    first, second = unibench.test_names["MER2023"][:2]
    df.loc[df["name"] == first, ds.transcript_column] = "NA"
    df.loc[df["name"] == second, ds.transcript_column] = "null"
    df.to_csv(path, index=False)
    rows = {r.name: r.subtitle for r in read_unibench("MER2023", tmp_path)}
    assert (rows[first], rows[second]) == ("", "") and all(rows[n] for n in unibench.test_names["MER2023"][2:])
