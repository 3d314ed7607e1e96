"""Synthetic MER-UniBench folders: each dataset's real label-file and media layout.

`write_unibench` writes one ``*-process`` folder per dataset, laid out as the dataset's entry
in `scoring.unibench.DATASETS` says (label file and key, transcript CSV and column, video
folder and extension, audio and face folders), so the readers and the benchmark can be tested
on real files. The label files are made the way the real ones are: ``np.savez`` of pickled
dicts (``label-6way.npz`` ``test1_corpus`` ``{name: {emo, val}}``, IEMOCAP ``label_4way.npz``
``whole_corpus`` with label indices over all five sessions, MELD ``label.npz`` indices,
sentiment sets ``{val}``) or ``ovlabel.csv`` (``name``, ``openset``). Media come from the
`synth.corpus` renderers, so each sample's emotion is seen (face tint, mouth,
motion) and heard (pitch, rhythm) and a model can recover it.

Classes without a rendered counterpart (MELD's ``disgust``) are not drawn; sentiment samples
are rendered happy (val > 0), sad (val < 0) or neutral (val = 0). Each folder holds
``scoring.unibench.SYNTHETIC_MARKER``, so that reports on it say the data is synthetic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from scoring.unibench import DATASETS, SYNTHETIC_MARKER, UniBenchDataset, get_dataset
from synth.corpus import (
    DEFAULT_SR,
    EMOTIONS,
    FPS,
    MAIN_WORD,
    RELATED_WORDS,
    SUBTITLES,
    crop_faces,
    mux_frames,
    openset_text,
    render_audio,
    render_video,
    write_mp4,
)

# What `write_unibench` writes by default: one dataset per label-file format.
DEFAULT_DATASETS: tuple[str, ...] = ("MER2023", "IEMOCAPFour", "MELD", "CMUMOSI", "OVMERDPlus")
# Every MER-UniBench dataset (the demo's benchmark scores all nine).
ALL_DATASETS: tuple[str, ...] = tuple(DATASETS)

# A dataset label word -> the synth_corpus emotion whose media show it.
RENDERED_AS: dict[str, str] = {
    **{e: e for e in EMOTIONS},
    "anger": "angry",
    "joy": "happy",
    "sadness": "sad",
    "fear": "worried",
}
# Signed valence per rendered emotion for the MER 6-way ``val`` field.
VALENCE: dict[str, float] = {
    "neutral": 0.0, "happy": 1.5, "sad": -1.5, "angry": -2.0, "worried": -1.0, "surprise": 0.5,
}
# Sample-name patterns in each dataset's own style (IEMOCAP's 5th character is the session).
NAME_PATTERNS: dict[str, str] = {
    "MER2023": "sample_{i:08d}",
    "MER2024": "sample_{i:08d}",
    "IEMOCAPFour": "Ses0{session}{gender}_impro{i:02d}_{gender}{i:03d}",
    "MELD": "dia{i}_utt0",
    "CMUMOSI": "mosi{i:04d}_{i}",
    "CMUMOSEI": "mosei{i:04d}_{i}",
    "SIMS": "video_{i:04d}_0001",
    "SIMSv2": "aqgy4_{i:04d}_00001",
    "OVMERDPlus": "samplenew3_{i:08d}",
}
NON_TEST_PER_SESSION = 1  # IEMOCAP samples written for each of sessions 1-4 (not test)


@dataclass
class UniBenchSummary:
    """Where the synthetic folders went: per dataset, its folder and test names."""

    root: Path
    datasets: dict[str, Path] = field(default_factory=dict)
    test_names: dict[str, list[str]] = field(default_factory=dict)
    emotions: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> rendered emotion
    seconds: float = 0.0

    def __str__(self) -> str:
        parts = ", ".join(f"{d} {len(n)}" for d, n in self.test_names.items())
        return (f"MER-UniBench (synthetic) in {self.root} ({self.seconds:.1f}s): "
                f"{parts} test samples")


def _classes(ds: UniBenchDataset) -> tuple[str, ...]:
    """The gold values drawn for ``ds`` (label words, or sentiment signs)."""
    if ds.metric == "sentiment":
        return ("positive", "negative", "neutral")
    if ds.metric == "ov":
        return EMOTIONS
    names = ds.label_names or EMOTIONS
    return tuple(n for n in names if n in RENDERED_AS)


def _balanced(classes: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    labels = [classes[i % len(classes)] for i in range(n)]
    return [labels[j] for j in rng.permutation(n)]


def _gold_entry(ds: UniBenchDataset, label: str, rng: np.random.Generator) -> tuple[Any, str]:
    """(the label file's value for one sample, the emotion its media show)."""
    if ds.metric == "sentiment":
        if label == "neutral":
            return {"val": 0.0}, "neutral"
        magnitude = round(float(rng.uniform(0.2, 3.0)), 4)
        sign = 1.0 if label == "positive" else -1.0
        return {"val": sign * magnitude}, "happy" if sign > 0 else "sad"
    emotion = RENDERED_AS[label]
    if ds.metric == "ov":
        words = [] if emotion == "neutral" and rng.random() < 0.5 else [MAIN_WORD[emotion]]
        if emotion != "neutral" and rng.random() < 0.5:
            words.append(str(rng.choice(RELATED_WORDS[emotion])))
        return openset_text(words, quoted=bool(rng.random() < 0.5)), emotion
    if ds.label_names:
        return {"emo": ds.label_names.index(label), "val": VALENCE[emotion]}, emotion
    return {"emo": label, "val": VALENCE[emotion]}, emotion


def write_avi(path: str | Path, frames: np.ndarray, fps: int = FPS) -> None:
    """RGB frames as an MPEG-4 Part 2 ``.avi`` without sound (the wav carries it, as in IEMOCAP)."""
    import av

    with av.open(str(path), "w", format="avi") as box:
        vs = box.add_stream("mpeg4", rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.bit_rate = 2_000_000
        vs.thread_count = 1
        mux_frames(box, vs, frames, fps)


def write_media(folder: Path, ds: UniBenchDataset, name: str, emotion: str,
                rng: np.random.Generator) -> None:
    """One sample's video, wav and OpenFace stack in ``ds``'s media folders under ``folder``."""
    import soundfile as sf

    n_frames = int(rng.integers(FPS, 2 * FPS))  # 1-2 s: short keeps the fixtures fast
    frames, boxes = render_video(emotion, n_frames, rng)
    audio = render_audio(emotion, n_frames / FPS, DEFAULT_SR, rng)
    ext = ds.video_ext[0]
    video_dir, audio_dir, face_dir = (folder / ds.video_folder, folder / ds.audio_folder,
                                      folder / ds.face_folder)
    for d in (video_dir, audio_dir, face_dir):
        d.mkdir(parents=True, exist_ok=True)
    if ext == ".avi":
        write_avi(video_dir / f"{name}{ext}", frames)
    else:
        write_mp4(video_dir / f"{name}{ext}", frames, audio[None], DEFAULT_SR)
    sf.write(audio_dir / f"{name}.wav", audio, DEFAULT_SR, subtype="PCM_16", format="WAV")
    face = ds.face_path(folder, name)
    face.parent.mkdir(parents=True, exist_ok=True)
    np.save(face, crop_faces(frames, boxes), allow_pickle=False)


def _names(ds: UniBenchDataset, n: int) -> tuple[list[str], list[str]]:
    """(test names, non-test names) in the dataset's naming style."""
    pattern = NAME_PATTERNS.get(ds.name, "sample_{i:08d}")
    if ds.test_split == "iemocap_session5":
        test = [pattern.format(session=5, gender="FM"[i % 2], i=i) for i in range(n)]
        other = [pattern.format(session=s, gender="FM"[j % 2], i=j)
                 for s in range(1, 5) for j in range(NON_TEST_PER_SESSION)]
        return test, other
    return [pattern.format(i=i) for i in range(n)], []


def _transcript_columns(ds: UniBenchDataset) -> tuple[str, ...]:
    if ds.transcript_column in ("chinese", "english"):
        return ("name", "chinese", "english")
    return ("name", ds.transcript_column)


def write_dataset(root: str | Path, dataset: str, n: int,
                  seed: int = 0) -> tuple[Path, dict[str, str]]:
    """Write one dataset's ``*-process`` folder with ``n`` test samples; returns it and
    ``{test name: rendered emotion}``."""
    import pandas as pd

    ds = get_dataset(dataset)
    if n < 1:
        raise InputError(f"n={n}: a dataset needs at least one test sample")
    folder = Path(root) / ds.folder
    folder.mkdir(parents=True, exist_ok=True)
    ds_index = list(NAME_PATTERNS).index(ds.name)
    order_rng = np.random.default_rng([seed, ds_index, 0x0B])
    test, other = _names(ds, n)
    names = test + other
    labels = _balanced(_classes(ds), len(names), order_rng)
    corpus: dict[str, Any] = {}
    emotions: dict[str, str] = {}
    transcripts = []
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        # One generator per sample: any sample can be regenerated alone from (seed, dataset, i).
        rng = np.random.default_rng([seed, ds_index, i])
        corpus[name], emotion = _gold_entry(ds, label, rng)
        english, chinese = SUBTITLES[int(rng.integers(len(SUBTITLES)))]
        text = {"name": name, "chinese": chinese, "english": english,
                ds.transcript_column: chinese if ds.transcript_column == "chinese" else english}
        transcripts.append({c: text[c] for c in _transcript_columns(ds)})
        write_media(folder, ds, name, emotion, rng)
        if name in test:
            emotions[name] = emotion
    if ds.label_key is None:
        pd.DataFrame({"name": list(corpus), "openset": list(corpus.values())}).to_csv(
            folder / ds.label_file, index=False, encoding="utf-8")
    else:
        arrays = {ds.label_key: corpus}
        if ds.label_key != "whole_corpus":
            # A train split with no media: a reader that picks the wrong key fails loudly.
            arrays["train_corpus"] = {f"train_{i:04d}": corpus[names[0]] for i in range(2)}
        np.savez(folder / ds.label_file, **arrays)
    pd.DataFrame(transcripts, columns=list(_transcript_columns(ds))).to_csv(
        folder / ds.transcript_file, index=False, encoding="utf-8")
    (folder / SYNTHETIC_MARKER).write_text(
        f"Synthetic {ds.name} folder written by synth.unibench (affectflow synth-unibench): rendered media "
        "and drawn labels, not MER-UniBench data. Scores on it check the pipeline; they are not results.\n",
        encoding="utf-8")
    return folder, emotions


def write_unibench(out: str | Path, n_per_dataset: int, seed: int = 0,
                   datasets: tuple[str, ...] | list[str] | None = None) -> UniBenchSummary:
    """Write synthetic ``*-process`` folders under ``out`` (default: MER2023, IEMOCAP, MELD,
    CMU-MOSI, OV-MERD+), ``n_per_dataset`` test samples each; same seed, same files."""
    t0 = time.perf_counter()
    root = Path(out)
    summary = UniBenchSummary(root=root)
    for name in datasets or DEFAULT_DATASETS:
        ds = get_dataset(name)
        folder, emotions = write_dataset(root, ds.name, n_per_dataset, seed)
        summary.datasets[ds.name] = folder
        summary.test_names[ds.name] = sorted(emotions)
        summary.emotions[ds.name] = dict(sorted(emotions.items()))
    summary.seconds = time.perf_counter() - t0
    return summary
