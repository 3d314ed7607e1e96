"""The synthetic MER2025 corpus: exact layout, readable media, faces a detector finds, labels the
emotion wheel knows, determinism, and an emotion signal that survives heavy pooling."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synth import corpus as sc

N = 12
SEED = 0
CSV_COLUMNS = {
    "subtitle_chieng.csv": ["name", "english", "chinese"],
    "track2_train_mercaptionplus.csv": ["name", "openset"],
    "track3_train_mercaptionplus.csv": ["name", "reason"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, sc.CorpusSummary]:
    root = tmp_path_factory.mktemp("synth") / "mer2025-dataset"
    return root, sc.write_corpus(root, n=N, seed=SEED)


@pytest.fixture(scope="module")
def names() -> list[str]:
    return [sc.sample_name(i) for i in range(N)]


@pytest.fixture(scope="module")
def emotions() -> list[str]:
    return sc.corpus_emotions(N, SEED)


@pytest.fixture(scope="module")
def decoded(corpus, names) -> dict[str, np.ndarray]:
    """Every video decoded once with decord (RGB), shared by the tests that look at pixels."""
    import decord

    root, _ = corpus
    out = {}
    for name in names:
        vr = decord.VideoReader(str(root / "video" / f"{name}.mp4"))
        out[name] = vr.get_batch(list(range(len(vr)))).asnumpy()
    return out


def parse_openset(text: str) -> list[str]:
    """The reference rule: strip the brackets, split on quotes and commas."""
    return [w.strip() for w in re.split(r"[,'\"]", text.strip().strip("[]")) if w.strip()]


def test_layout_is_exactly_mer2025(corpus, names):
    root, summary = corpus
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["video", "audio", "openface_face", *CSV_COLUMNS])
    assert sorted(p.name for p in (root / "video").iterdir()) == [f"{n}.mp4" for n in names]
    assert sorted(p.name for p in (root / "audio").iterdir()) == [f"{n}.wav" for n in names]
    assert sorted(p.name for p in (root / "openface_face").iterdir()) == names
    for n in names:
        assert [p.name for p in (root / "openface_face" / n).iterdir()] == [f"{n}.npy"]
    assert summary.n == N and summary.root == root
    assert summary.counts == {e: N // 6 for e in sc.EMOTIONS}
    assert str(N) in str(summary) and "happy 2" in str(summary)


def test_videos_decode_at_25fps_with_audio(corpus, names, decoded):
    import av
    import decord

    root, _ = corpus
    for name in names:
        path = root / "video" / f"{name}.mp4"
        vr = decord.VideoReader(str(path))
        assert vr.get_avg_fps() == pytest.approx(25, abs=0.5)
        t = np.load(root / "openface_face" / name / f"{name}.npy", allow_pickle=False).shape[0]
        assert len(vr) == t and 50 <= t <= 75  # 2-3 s at 25 fps
        assert decoded[name].shape[1:] == (sc.FRAME_SIZE, sc.FRAME_SIZE, 3)
        with av.open(str(path)) as box:
            assert box.streams.video[0].codec_context.name in ("h264", "mpeg4")
            assert box.streams.video[0].codec_context.pix_fmt == "yuv420p"
            (audio,) = box.streams.audio
            assert audio.codec_context.name == "aac"
            sr = audio.rate
            samples = sum(f.samples for f in box.decode(audio))
        assert samples / sr == pytest.approx(t / 25, abs=0.1)


def test_wavs_load_with_mixed_rates_and_channels(corpus, names):
    import librosa
    import soundfile as sf

    root, _ = corpus
    formats = []
    for name in names:
        path = root / "audio" / f"{name}.wav"
        info = sf.info(str(path))
        assert info.subtype == "PCM_16"
        y, sr = librosa.load(str(path), sr=None, mono=False)
        formats.append((sr, 1 if y.ndim == 1 else y.shape[0]))
        t = np.load(root / "openface_face" / name / f"{name}.npy", allow_pickle=False).shape[0]
        assert y.shape[-1] / sr == pytest.approx(t / 25, abs=1e-3)
        assert 0.05 < np.abs(y).max() <= 1.0
    assert formats.count((16_000, 1)) > N / 2
    assert (44_100, 2) in formats


def test_face_stacks_are_uint8_bgr_crops(corpus, names, emotions):
    root, _ = corpus
    for name, emotion in zip(names, emotions):
        faces = np.load(root / "openface_face" / name / f"{name}.npy", allow_pickle=False)
        assert faces.dtype == np.uint8 and faces.shape[1:] == (112, 112, 3)
        b, _, r = faces.reshape(-1, 3).mean(0)
        # BGR: the red tint of anger lands in the last channel, the blue of sadness in the first.
        if emotion == "angry":
            assert r > b + 30
        if emotion == "sad":
            assert b > r + 30


def test_csvs_have_the_design_columns_and_every_name(corpus, names):
    root, _ = corpus
    for fname, cols in CSV_COLUMNS.items():
        df = pd.read_csv(root / fname, encoding="utf-8")
        assert list(df.columns) == cols, fname
        assert sorted(df["name"]) == names, fname
        assert not df.isna().any().any(), fname
    subs = pd.read_csv(root / "subtitle_chieng.csv")
    pool = {e for e, _ in sc.SUBTITLES}
    assert set(subs["english"]) <= pool
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in c) for c in subs["chinese"])
    # The subtitle must not give the label away.
    words = {w for e in sc.EMOTIONS for w in (e, sc.MAIN_WORD[e], *sc.RELATED_WORDS[e])}
    for text in pool:
        assert not words & set(re.findall(r"[a-z]+", text.lower())), text


def test_openset_labels_parse_into_wheel_words(corpus, emotions, wheel_dir):
    root, _ = corpus
    wheel = set(pd.read_csv(wheel_dir / "format.csv")["name"])
    # Every word the generator can write, not only the ones this seed drew.
    for e in sc.EMOTIONS:
        for w in (sc.MAIN_WORD[e], *sc.RELATED_WORDS[e]):
            assert w in wheel or w == "neutral", w
    df = pd.read_csv(root / "track2_train_mercaptionplus.csv")
    assert any("'" in t for t in df["openset"]) and any("'" not in t for t in df["openset"])
    for text, emotion in zip(df["openset"], emotions):
        words = parse_openset(text)
        if emotion == "neutral":
            assert words in ([], ["neutral"]), text
        else:
            assert words[0] == sc.MAIN_WORD[emotion], text
            assert set(words[1:]) <= set(sc.RELATED_WORDS[emotion]), text
            assert set(words) <= wheel, text


def test_reasons_read_like_affectgpt_descriptions(corpus, emotions):
    root, _ = corpus
    df = pd.read_csv(root / "track3_train_mercaptionplus.csv")
    for text, emotion in zip(df["reason"], emotions):
        assert text.startswith("In the text")
        assert "video" in text and "audio" in text
        assert text.endswith(f"{sc.MAIN_WORD[emotion]}.")


def test_haar_cascade_finds_the_face(decoded):
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    for name, frames in decoded.items():
        picked = frames[::6]  # every sixth frame (about 10 a video) keeps the test lean
        found = [len(cascade.detectMultiScale(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 1.1, 5)) > 0
                 for f in picked]
        assert np.mean(found) >= 0.8, (name, np.mean(found))


def test_same_seed_same_bytes(corpus, names, decoded, tmp_path):
    root, _ = corpus
    again = tmp_path / "again"
    sc.write_corpus(again, n=N, seed=SEED)
    for fname in CSV_COLUMNS:
        assert (again / fname).read_bytes() == (root / fname).read_bytes(), fname
    for name in names:
        for rel in (f"audio/{name}.wav", f"openface_face/{name}/{name}.npy"):
            assert (again / rel).read_bytes() == (root / rel).read_bytes(), rel
    import decord

    # The encoder may not be bit-exact everywhere; the decoded pictures must still agree.
    vr = decord.VideoReader(str(again / "video" / f"{names[0]}.mp4"))
    frames = vr.get_batch(list(range(len(vr)))).asnumpy().astype(np.int16)
    assert np.abs(frames - decoded[names[0]]).mean() < 1.0
    other = tmp_path / "other"
    sc.write_corpus(other, n=6, seed=SEED + 1)
    subs = "subtitle_chieng.csv"
    assert (other / subs).read_bytes() != (root / subs).read_bytes()


def mean_spectrum(y: np.ndarray, sr: int) -> np.ndarray:
    """Log mean magnitude spectrum (0-4 kHz) of mono 16 kHz audio; numpy only."""
    frame = 512
    y = y[: len(y) // frame * frame].reshape(-1, frame) * np.hanning(frame)
    mag = np.abs(np.fft.rfft(y, axis=1)).mean(0)
    return np.log(mag[: int(4000 / (sr / frame))] + 1e-6)


def nearest_centroid_accuracy(blocks: list[np.ndarray], y: list[str], train: np.ndarray) -> float:
    """Classify the held-out samples by the nearest training class mean.

    Each feature block (colour, spectrum) is centred and scaled by one number fitted on the
    training half, so a 128-bin spectrum and a 3-value colour weigh alike and near-constant
    bins are not blown up into noise.
    """
    labels = np.asarray(y)
    centred = [b - b[train].mean(0) for b in blocks]
    z = np.concatenate([c / c[train].std() for c in centred], 1)
    classes = sorted(set(labels[train]))
    centroids = np.stack([z[train & (labels == c)].mean(0) for c in classes])
    pred = np.asarray(classes)[np.argmin(((z[~train, None] - centroids) ** 2).sum(-1), 1)]
    return float((pred == labels[~train]).mean())


def test_corpus_files_separate_the_classes(corpus, names, emotions, decoded):
    import librosa

    root, _ = corpus
    colours, spectra = [], []
    for name in names:
        y, _ = librosa.load(str(root / "audio" / f"{name}.wav"), sr=16_000, mono=True)
        colours.append(decoded[name].reshape(-1, 3).mean(0))
        spectra.append(mean_spectrum(y, 16_000))
    # One sample of each class trains, the other one is held out.
    train = np.zeros(N, bool)
    for e in sc.EMOTIONS:
        train[emotions.index(e)] = True
    assert nearest_centroid_accuracy([np.stack(colours), np.stack(spectra)], emotions, train) == 1.0


@pytest.mark.parametrize("modality", ["frames", "faces", "audio"])
def test_each_modality_alone_separates_the_classes(modality):
    # Pure functions, no files: 8 samples per class, short clips, to measure each modality alone.
    labels, feats = [], []
    for k in range(8):
        for e in sc.EMOTIONS:
            rng = np.random.default_rng([7, k, sc.EMOTIONS.index(e)])
            if modality == "audio":
                sr = (16_000, 44_100)[k % 2]
                y = sc.render_audio(e, rng.uniform(2, 3), sr, rng)
                f = mean_spectrum(_to_16k(y, sr), 16_000)
            else:
                frames, boxes = sc.render_video(e, 6, rng, size=128)
                img = frames if modality == "frames" else sc.crop_faces(frames, boxes)[..., ::-1]
                f = img.reshape(-1, 3).mean(0)
            labels.append(e)
            feats.append(f)
    train = np.arange(len(labels)) // len(sc.EMOTIONS) % 2 == 0  # even k trains, odd k tests
    assert nearest_centroid_accuracy([np.stack(feats)], labels, train) >= 0.95


def _to_16k(y: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    return y if sr == 16_000 else librosa.resample(y, orig_sr=sr, target_sr=16_000)


def test_pure_renderers_shapes_and_determinism():
    a = sc.render_frames("happy", 5, np.random.default_rng(1), size=96)
    b = sc.render_frames("happy", 5, np.random.default_rng(1), size=96)
    assert a.dtype == np.uint8 and a.shape == (5, 96, 96, 3) and np.array_equal(a, b)
    y = sc.render_audio("sad", 2.5, 22_050, np.random.default_rng(1))
    assert y.dtype == np.float32 and y.shape == (55_125,) and np.abs(y).max() <= 1.0
    assert sc.motion_track("angry", 10, np.random.default_rng(0)).shape == (10, 3)
    with pytest.raises(ValueError, match="unknown emotion 'bored'"):
        sc.render_audio("bored", 1.0, 16_000, np.random.default_rng(0))


def test_write_sample_can_leave_media_out(tmp_path):
    rec = sc.write_sample(tmp_path, "odd", "worried", np.random.default_rng(0),
                          seconds=0.4, sr=44_100, channels=2, media=("audio",))
    assert (tmp_path / "audio" / "odd.wav").is_file()
    assert not (tmp_path / "video").exists() and not (tmp_path / "openface_face").exists()
    assert rec.n_frames == 10 and rec.sample_rate == 44_100 and rec.channels == 2
    sc.write_csvs(tmp_path, [rec])
    assert pd.read_csv(tmp_path / "track2_train_mercaptionplus.csv")["name"].tolist() == ["odd"]
    with pytest.raises(ValueError, match="path separators"):
        sc.write_sample(tmp_path, "a/b", "happy", np.random.default_rng(0))
