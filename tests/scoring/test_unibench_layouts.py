"""MER-UniBench readers on folders written here, file by file, in each dataset's released layout.

Nothing here comes from our dataset table (`scoring.unibench.DATASETS`) or from `synth.unibench`:
every folder, file name, npz key, value type and column is a literal taken from the release's
readers (AffectGPT ``config.py`` and ``my_affectgpt/datasets/datasets/*.py``, named per dataset
below), so a wrong entry in our table fails here. Label files are ``np.savez_compressed`` of dicts
(pickled object arrays), as the release's readers load them (``np.load(..., allow_pickle=True)
[key].tolist()``); media are one small real clip of the session corpus copied under each name.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipelines.manifest import read_unibench
from scoring.unibench import load_gold


@dataclass(frozen=True)
class Layout:
    """One dataset folder as the release reads it."""

    folder: str  # config.py DATA_DIR (lines 30-42), under the benchmark root
    label_file: str  # config.py PATH_TO_LABEL (lines 96-107)
    corpora: dict  # npz key -> {name: entry}; the test key is the one the reader's read_test_names opens
    transcript: str  # config.py PATH_TO_TRANSCRIPTIONS (lines 83-95)
    column: str  # the transcript column the dataset class reads (row['english'] / row['chinese'])
    video: str  # config.py PATH_TO_RAW_VIDEO (lines 56-68) + the extension _get_video_path tries
    audio: str  # config.py PATH_TO_RAW_AUDIO (lines 43-55)
    nested_face: bool = False  # openface_face/{name}/{name}.npy (mer2025ov_dataset.py:161) vs {name}.npy


def emo6(emo: str, val: float) -> dict:
    return {"emo": emo, "val": val}


LAYOUTS = {
    # mer2023.py:120-134 reads label-6way.npz['test1_corpus'][name]['emo'] (a word); subtitles row['english']
    # (mer2023.py:56); videos .mp4, else .avi (mer2023.py:87-94); faces openface_face/{name}.npy (line 100).
    "MER2023": Layout("mer2023-dataset-process", "label-6way.npz",
                      {"train_corpus": {"sample_00000001": emo6("happy", 1.5)},
                       "test1_corpus": {"sample_00000007": emo6("worried", -1.0),
                                        "sample_00000003": emo6("surprise", 0.5)}},
                      "transcription-engchi-polish.csv", "english", "video/{}.avi", "audio"),
    # mer2024.py:122-136: the same keys; its subtitles are row['chinese'] of transcription_merge.csv (line 57).
    "MER2024": Layout("mer2024-dataset-process", "label-6way.npz",
                      {"train_corpus": {"sample_00000101": emo6("sad", -2.0)},
                       "test1_corpus": {"sample_00000104": emo6("angry", -1.5)}},
                      "transcription_merge.csv", "chinese", "video/{}.mp4", "audio"),
    # iemocap.py:53-61, 105-119: label_4way.npz['whole_corpus'][name]['emo'] is an index into
    # ['happy', 'sad', 'neutral', 'anger'] (line 30); the test split is session 5 (int(name[4]) - 1 == 4).
    # Videos subvideo-tgt/{name}.avi (line 125), audio subaudio/ (config.py:48).
    "IEMOCAPFour": Layout("iemocap-process", "label_4way.npz",
                          {"whole_corpus": {"Ses01F_impro01_F000": {"emo": 2}, "Ses02M_impro03_M001": {"emo": 3},
                                            "Ses03F_script01_1_F002": {"emo": 1}, "Ses04M_impro05_M010": {"emo": 2},
                                            "Ses05F_impro01_F000": {"emo": 0}, "Ses05M_script02_M011": {"emo": 1}}},
                          "transcription-engchi-polish.csv", "english", "subvideo-tgt/{}.avi", "subaudio"),
    # meld.py:122-135: label.npz['test_corpus'][name]['emo'] indexes ['anger', 'joy', 'sadness', 'neutral',
    # 'disgust', 'fear', 'surprise'] (line 31); videos subvideo/{name}.mp4 (line 95), audio subaudio/.
    "MELD": Layout("meld-process", "label.npz",
                   {"train_corpus": {"dia1_utt0": {"emo": 3}},
                    "test_corpus": {"dia0_utt0": {"emo": 1}, "dia0_utt1": {"emo": 6}}},
                   "transcription-engchi-polish.csv", "english", "subvideo/{}.mp4", "subaudio"),
    # cmumosi.py:119-133: label.npz['test_corpus'][name]['val']; videos subvideo/{name}.mp4 (line 92).
    "CMUMOSI": Layout("cmumosi-process", "label.npz",
                      {"train_corpus": {"2iD-tVS8NPw_1": {"val": 0.4}},
                       "test_corpus": {"03bSnISJMiM_1": {"val": 2.4}, "03bSnISJMiM_2": {"val": -0.6}}},
                      "transcription-engchi-polish.csv", "english", "subvideo/{}.mp4", "subaudio"),
    # cmumosei.py:119-133: the same keys; videos subvideo_new/{name}.mp4 (config.py:63, line 92).
    "CMUMOSEI": Layout("cmumosei-process", "label.npz",
                       {"test_corpus": {"-3g5yACwYnA_10": {"val": -1.0}}},
                       "transcription-engchi-polish.csv", "english", "subvideo_new/{}.mp4", "subaudio"),
    # sims.py:121-135: label.npz['test_corpus'][name]['val']; video/{name}.mp4 (line 93), audio/ (config.py:51).
    "SIMS": Layout("sims-process", "label.npz",
                   {"test_corpus": {"video_0001_0001": {"val": 0.8}}},
                   "transcription-engchi-polish.csv", "english", "video/{}.mp4", "audio"),
    # simsv2.py:121-135: the same keys; videos video_new/{name}.mp4 (config.py:66, line 93).
    "SIMSv2": Layout("simsv2-process", "label.npz",
                     {"test_corpus": {"aqgy3_0001_00001": {"val": -0.2}}},
                     "transcription-engchi-polish.csv", "english", "video_new/{}.mp4", "audio"),
    # OV-MERD+ (532 samples) ships as ovlabel.csv (name, openset); the release reads its media in the
    # MER2025-OV layout: subtitle_chieng.csv row['english'] (config.py:84, mer2025ov_dataset.py:132),
    # video/{name}.mp4 (line 153), faces openface_face/{name}/{name}.npy (line 161).
    "OVMERDPlus": Layout("ovmerdplus-process", "ovlabel.csv",
                         {"": {"samplenew3_00000010": "[happy, relaxed]", "samplenew3_00000002": "['sad']"}},
                         "subtitle_chieng.csv", "english", "video/{}.mp4", "audio", nested_face=True),
}

# The gold each reader must give: written by hand from the entries above (index -> word by the
# release's lists; sentiment sets keep no label words; IEMOCAP keeps session 5 only).
GOLD = {
    "MER2023": {"sample_00000003": "surprise", "sample_00000007": "worried"},
    "MER2024": {"sample_00000104": "angry"},
    "IEMOCAPFour": {"Ses05F_impro01_F000": "happy", "Ses05M_script02_M011": "sad"},
    "MELD": {"dia0_utt0": "joy", "dia0_utt1": "surprise"},
    "CMUMOSI": {"03bSnISJMiM_1": 2.4, "03bSnISJMiM_2": -0.6},
    "CMUMOSEI": {"-3g5yACwYnA_10": -1.0},
    "SIMS": {"video_0001_0001": 0.8},
    "SIMSv2": {"aqgy3_0001_00001": -0.2},
    "OVMERDPlus": {"samplenew3_00000002": ["sad"], "samplenew3_00000010": ["happy", "relaxed"]},
}


def write_layout(root: Path, layout: Layout, media: dict[str, Path]) -> Path:
    """Write one dataset folder: label file, transcript (name, chinese, english), video, wav, face per name."""
    folder = root / layout.folder
    folder.mkdir(parents=True)
    names = [n for corpus in layout.corpora.values() for n in corpus]
    if layout.label_file.endswith(".csv"):
        with open(folder / layout.label_file, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["name", "openset"])
            w.writerows(layout.corpora[""].items())
    else:
        np.savez_compressed(folder / layout.label_file, **layout.corpora)
    with open(folder / layout.transcript, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "chinese", "english"])
        w.writerows([n, f"中文 {n}", f"english {n}"] for n in names)
    for n in names:
        video = folder / layout.video.format(n)
        wav = folder / layout.audio / f"{n}.wav"
        face = folder / "openface_face" / (f"{n}/{n}.npy" if layout.nested_face else f"{n}.npy")
        for src, dst in ((media["video"], video), (media["audio"], wav), (media["face"], face)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return folder


@pytest.fixture(scope="module")
def released(tmp_path_factory, synth_corpus) -> Path:
    """A benchmark root holding all nine folders in the released layouts."""
    root = tmp_path_factory.mktemp("unibench-release")
    name = "sample_00000000"
    media = {"video": synth_corpus / "video" / f"{name}.mp4", "audio": synth_corpus / "audio" / f"{name}.wav",
             "face": synth_corpus / "openface_face" / name / f"{name}.npy"}
    for layout in LAYOUTS.values():
        write_layout(root, layout, media)
    return root


@pytest.mark.parametrize("dataset", list(LAYOUTS))
def test_reader_opens_the_released_files(released, dataset):
    layout = LAYOUTS[dataset]
    folder = released / layout.folder
    assert load_gold(dataset, folder) == GOLD[dataset]
    rows = read_unibench(dataset, released)
    assert [r.name for r in rows] == sorted(GOLD[dataset])
    column = 1 if layout.column == "chinese" else 2
    for r in rows:
        assert r.error == "", r.error
        assert r.video == str(folder / layout.video.format(r.name))
        assert r.audio == str(folder / layout.audio / f"{r.name}.wav")
        face = f"openface_face/{r.name}/{r.name}.npy" if layout.nested_face else f"openface_face/{r.name}.npy"
        assert r.face == str(folder / face)
        assert r.subtitle == ["", "中文 ", "english "][column] + r.name
        gold = GOLD[dataset][r.name]
        assert r.openset == ([] if isinstance(gold, float) else gold if isinstance(gold, list) else [gold])
    # The dataset folder itself is accepted as the root too.
    assert [r.name for r in read_unibench(dataset, folder)] == sorted(GOLD[dataset])


def test_clear_errors_name_the_missing_file(released, tmp_path):
    from core.errors import BenchmarkError

    with pytest.raises(FileNotFoundError, match="meld-process"):
        read_unibench("MELD", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_unibench("MELD", tmp_path / "nowhere")
    with pytest.raises(BenchmarkError, match="unknown MER-UniBench dataset 'NOPE'"):
        read_unibench("NOPE", released)
    copy = tmp_path / "copy" / "meld-process"
    shutil.copytree(released / "meld-process", copy)
    (copy / "transcription-engchi-polish.csv").unlink()
    with pytest.raises(FileNotFoundError, match="transcription-engchi-polish.csv"):
        read_unibench("MELD", copy.parent)
    shutil.copy(released / "meld-process" / "transcription-engchi-polish.csv", copy)
    shutil.rmtree(copy / "subvideo")
    with pytest.raises(FileNotFoundError, match="subvideo"):
        read_unibench("MELD", copy.parent)
    (copy / "subvideo").mkdir()
    rows = read_unibench("MELD", copy.parent)
    assert all(r.error.startswith("manifest/missing-file") and "subvideo" in r.error for r in rows)
    (copy / "label.npz").unlink()
    with pytest.raises(FileNotFoundError, match="label.npz"):
        read_unibench("MELD", copy.parent)


def test_an_na_transcript_cell_is_an_empty_subtitle_as_in_the_release(released, tmp_path):
    """The release reads the transcript with pandas' read_csv and makes a missing cell "" (mer2023.py lines
    53-57); read_csv's default na_values make "NA" and "null" missing, so those rows have no subtitle."""
    layout = LAYOUTS["MER2023"]
    folder = tmp_path / layout.folder
    shutil.copytree(released / layout.folder, folder)
    with open(folder / layout.transcript, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["name", "chinese", "english"], ["sample_00000003", "中文", "NA"],
                                 ["sample_00000007", "中文", "null"]])
    assert {r.name: r.subtitle for r in read_unibench("MER2023", tmp_path)} == {"sample_00000003": "",
                                                                             "sample_00000007": ""}
