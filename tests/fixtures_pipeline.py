"""Fixtures for the preprocessing tests: model dirs, a bad-input corpus, a tiny Whisper, a reference store.

Builds on conftest's session fixtures (``tiny_models``, ``synth_corpus``, ``ray_session``).
Import the fixtures you use into a test module (``from tests.fixtures_pipeline import ...``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from affectflow.config import load_config

BATCH = 4  # samples per part in the test runs: several parts per corpus, so resume is exercised


def pipeline_config(*overrides: str):
    """The run config the tests use: small batches, 2 local CPUs, fp32 CPU encoders."""
    return load_config(None, [f"preprocess.batch_size={BATCH}", f"preprocess.write_batch_size={BATCH}",
                              "ray.num_cpus=2", *overrides])


@pytest.fixture(scope="session")
def models_dir(tiny_models) -> Path:
    """The directory holding ``clip/`` and ``hubert/`` (what ``--models`` takes)."""
    root = Path(tiny_models["clip"]).parent
    assert (root / "hubert" / "config.json").is_file()
    return root


@pytest.fixture(scope="session")
def models_v2(tmp_path_factory, models_dir) -> Path:
    """A second CLIP (other random weights) beside the same HuBERT: a new frame/face encoder version."""
    from affectflow.tiny_models import build_clip

    root = tmp_path_factory.mktemp("models_v2")
    build_clip(root / "clip", seed=7)
    (root / "hubert").symlink_to(models_dir / "hubert")
    return root


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's byte <-> printable-character table (byte-level BPE), which Whisper's tokenizer uses.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, map(chr, cs)))


def build_tiny_whisper(out: Path, seed: int = 0) -> Path:
    """A tiny random WhisperForConditionalGeneration with a byte-level tokenizer built here (no hub).

    Special tokens are suppressed in its generation config, so it always emits byte tokens and
    a transcript is never empty: tests can tell that ASR ran.
    """
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(_bytes_to_unicode().values())}))
    (out / "merges.txt").write_text("#version: 0.2\n")
    eot = "<|endoftext|>"
    tok = WhisperTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), unk_token=eot, bos_token=eot,
                           eos_token=eot, pad_token=eot)
    specials = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>", "<|nocaptions|>",
                "<|notimestamps|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    ids = {s: tok.convert_tokens_to_ids(s) for s in [eot, *specials]}
    cfg = WhisperConfig(
        vocab_size=len(tok), num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=64, pad_token_id=ids[eot], bos_token_id=ids[eot],
        eos_token_id=ids[eot], decoder_start_token_id=ids["<|startoftranscript|>"],
        begin_suppress_tokens=None, suppress_tokens=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[eot], pad_token_id=ids[eot],
        bos_token_id=ids[eot], no_timestamps_token_id=ids["<|notimestamps|>"], max_length=64,
        suppress_tokens=sorted(ids.values()),
    )
    model.save_pretrained(out)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80, sampling_rate=16000), tok).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def whisper_model(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "whisper")


# name -> (what is wrong, a word the recorded error must contain)
BAD_CASES = {
    "bad_corrupt": ("video/unreadable", "bad_corrupt.mp4"),
    "bad_zero": ("video/unreadable", "bad_zero.mp4"),
    "bad_noaudio": ("audio/no-track", "bad_noaudio.mp4"),
    "bad_wav": ("audio/unreadable", "bad_wav.wav"),
    "bad_face_empty": ("face/empty", "bad_face_empty.npy"),
    "bad_face_shape": ("face/bad-shape", "bad_face_shape.npy"),
    "bad_face_pickle": ("face/unreadable", "bad_face_pickle.npy"),
    "bad_missing": ("manifest/missing-file", "bad_missing.mp4"),
    "bad_utf8": ("subtitle/not-utf8", "subtitle_chieng.csv"),
    "../evil": ("manifest/bad-name", "subtitle_chieng.csv"),
}
GOOD = ("good_0", "good_1", "good_2", "good_nowav")


def write_bad_corpus(root: Path) -> Path:
    """A MER2025-layout corpus: the `GOOD` samples (one without a wav) beside one of each `BAD_CASES`."""
    import av

    from affectflow.synth_corpus import SampleRecord, write_csvs, write_sample

    records: list[SampleRecord] = []
    for i, name in enumerate(GOOD):
        media = ("video", "face") if name == "good_nowav" else ("video", "audio", "face")
        records.append(write_sample(root, name, "happy", np.random.default_rng(i), seconds=2.4, media=media))
    for i, name in enumerate(n for n in BAD_CASES if n not in ("bad_missing", "../evil")):
        records.append(write_sample(root, name, "sad", np.random.default_rng(100 + i), seconds=2.2))
    video, audio, faces = root / "video", root / "audio", root / "openface_face"
    good = (video / "good_0.mp4").read_bytes()
    (video / "bad_corrupt.mp4").write_bytes(good[: len(good) // 3][::-1])
    (video / "bad_zero.mp4").write_bytes(b"")
    # A video with no audio track, and no wav beside it.
    (audio / "bad_noaudio.wav").unlink()
    with av.open(str(video / "bad_noaudio.mp4"), "w", format="mp4") as box:
        stream = box.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for _ in range(10):
            box.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")))
        box.mux(stream.encode())
    (audio / "bad_wav.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    np.save(faces / "bad_face_empty" / "bad_face_empty.npy", np.zeros((0, 112, 112, 3), np.uint8))
    np.save(faces / "bad_face_shape" / "bad_face_shape.npy", np.zeros((5, 112, 112), np.uint8))
    np.save(faces / "bad_face_pickle" / "bad_face_pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    records.append(SampleRecord(name="bad_missing", emotion="sad", openset="[sad]", reason="", english="gone",
                                chinese="", n_frames=0, sample_rate=16000, channels=1))
    records.append(SampleRecord(name="../evil", emotion="sad", openset="[sad]", reason="", english="x",
                                chinese="", n_frames=0, sample_rate=16000, channels=1))
    write_csvs(root, records)
    # A subtitle cell that is not UTF-8 (Latin-1 bytes), in an otherwise valid file.
    csv_path = root / "subtitle_chieng.csv"
    lines = csv_path.read_bytes().split(b"\n")
    lines = [ln.replace(b"bad_utf8,", b"bad_utf8,caf\xe9 ", 1) if ln.startswith(b"bad_utf8,") else ln for ln in lines]
    csv_path.write_bytes(b"\n".join(lines))
    return root


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory) -> Path:
    return write_bad_corpus(tmp_path_factory.mktemp("bad_corpus"))


@pytest.fixture(scope="session")
def reference_store(tmp_path_factory, ray_session, synth_corpus, models_dir):
    """An uninterrupted run over the session corpus: ``(store path, PreprocessSummary)``."""
    from pipelines.job import preprocess

    path = tmp_path_factory.mktemp("stores") / "reference.zarr"
    summary = preprocess(synth_corpus, path, models=models_dir, cfg=pipeline_config())
    return path, summary


def copy_corpus(src: Path, dst: Path, names: list[str]) -> Path:
    """A MER2025 corpus holding only ``names`` of ``src`` (media copied, CSV rows filtered)."""
    import pandas as pd

    for sub, suffix in (("video", ".mp4"), ("audio", ".wav")):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            if (src / sub / f"{n}{suffix}").exists():
                shutil.copy(src / sub / f"{n}{suffix}", dst / sub / f"{n}{suffix}")
    for n in names:
        shutil.copytree(src / "openface_face" / n, dst / "openface_face" / n)
    for csv in src.glob("*.csv"):
        df = pd.read_csv(csv)
        df[df["name"].isin(names)].to_csv(dst / csv.name, index=False)
    return dst
