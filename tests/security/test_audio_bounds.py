"""Finding 6: a WAV header could demand unbounded memory (a 200 KB wav declaring 1 Hz was
resampled to 6.1 GiB) and a video's whole audio track was decoded though only 8 clips of 2 s
are used. Now the header's rate (4-192 kHz), channels and duration (`MAX_AUDIO_SECONDS`) are
checked before decoding, and a long track is read only where its clips lie.

Each hostile file runs through the real decode stage in a child process under an address-space
cap, beside a good sample that must still be stored; the failure message prints the child's peak RSS.
The WAV headers are written byte by byte from the RIFF/WAVE format: "RIFF" <size> "WAVE",
a 16-byte "fmt " chunk (format 1 = PCM, channels, rate, byte rate, block align, bits), "data" <size>."""

from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipelines.audio import MAX_AUDIO_SECONDS, load_clips
from tests.security.bounded import run_child


def pcm_wav(path: Path, rate: int, frames: int, bits: int = 16, channels: int = 1) -> Path:
    block = channels * bits // 8
    data = bytes(frames * block)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


@pytest.fixture(scope="module")
def good_sample(tmp_path_factory) -> dict:
    from synth.corpus import write_sample

    root = tmp_path_factory.mktemp("audio-good")
    write_sample(root, "good", "happy", np.random.default_rng(0), seconds=1.0)
    return {"video": str(root / "video" / "good.mp4"), "audio": str(root / "audio" / "good.wav"),
            "face": str(root / "openface_face" / "good" / "good.npy")}


def decode_in_child(good: dict, bad: dict, address_space_mb: int = 3072):
    rows = [{"name": "good", "subtitle": "", **good}, {"name": "bad", "subtitle": "", **good, **bad}]
    code = ("import json\nfrom pipelines.stages import DecodeStage\nstage = DecodeStage()\n"
            f"out = [stage.decode(r) for r in {rows!r}]\n"
            "print(json.dumps([[s.name, s.status, s.error] for s in out]))\n")
    run = run_child(code, address_space_mb=address_space_mb, timeout_s=120)
    assert run.returncode == 0, run.describe()
    return {name: (status, error) for name, status, error in json.loads(run.out.strip().splitlines()[-1])}, run


def test_a_wav_declaring_1_hz_fails_its_row_from_the_header(good_sample, tmp_path):
    bad = pcm_wav(tmp_path / "one_hz.wav", rate=1, frames=100_000)  # 200 KB
    rows, run = decode_in_child(good_sample, {"audio": str(bad)})
    assert rows["good"] == ("ok", ""), (rows, run.describe())
    status, error = rows["bad"]
    assert status == "failed" and error.startswith("audio/refused") and "1 Hz" in error and "one_hz.wav" in error, (
        rows, run.describe())
    assert run.peak_rss_mb < 700, run.describe()


def test_a_wav_over_the_duration_limit_fails_its_row_before_decoding(good_sample, tmp_path):
    rate = 4000
    bad = pcm_wav(tmp_path / "long.wav", rate=rate, frames=(MAX_AUDIO_SECONDS + 1) * rate, bits=8)
    rows, run = decode_in_child(good_sample, {"audio": str(bad)})
    assert rows["good"] == ("ok", ""), (rows, run.describe())
    status, error = rows["bad"]
    assert status == "failed" and error.startswith("audio/refused") and "limit" in error, (rows, run.describe())
    assert run.peak_rss_mb < 700 and run.seconds < 60, run.describe()


def flac_track(path: Path, seconds: int, sr: int = 48000) -> Path:
    """A video container holding only a long FLAC audio track (near-silence: small and quick to write)."""
    import av

    chunk = sr * 10
    wave = np.zeros((1, chunk), np.float32)
    wave[:, ::97] = 0.01
    with av.open(str(path), "w", format="matroska") as box:
        stream = box.add_stream("flac", rate=sr, layout="mono")
        for i in range(seconds // 10):
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, i * chunk, Fraction(1, sr)
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    return path


def test_a_long_video_track_is_decoded_only_where_its_clips_lie(tmp_path):
    """20 minutes of 48 kHz audio decode to 230 MB of float32 (the whole-track read peaked at
    565 MiB); only the 8 windows of 2 s (and the 30 s ASR prefix) are kept."""
    path = flac_track(tmp_path / "long.mkv", 1200)
    code = ("from pipelines.stages import AudioStage\n"
            f"clips, wave = AudioStage(keep_waveform_s=30)({{'name': 'x', 'video': {str(path)!r}, 'audio': ''}})\n"
            "print(clips.shape, wave.shape, float(abs(clips).max()))\n")
    run = run_child(code, address_space_mb=3072, timeout_s=120)
    assert run.returncode == 0 and "(8, 32000) (480000,)" in run.out, run.describe()
    assert run.peak_rss_mb < 250, run.describe()


def test_windowed_reading_equals_the_whole_read(tmp_path, monkeypatch):
    """The window path (forced by a small threshold) gives the whole-file read's clips and ASR
    prefix: each window starts on the target grid, so only the resampler's edge could differ."""
    import soundfile as sf

    import pipelines.audio as audio

    sr = 44100
    t = np.arange(sr * 20 + 123) / sr
    x = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 300 * t)]).astype(np.float32)
    sf.write(tmp_path / "tone.wav", x.T, sr, subtype="FLOAT")
    whole = load_clips(tmp_path / "tone.wav", "wav", keep_s=3.0)
    monkeypatch.setattr(audio, "MAX_WHOLE_AUDIO_BYTES", 1000)
    windowed = load_clips(tmp_path / "tone.wav", "wav", keep_s=3.0)
    assert windowed[0].shape == (8, 32000) and windowed[1].shape == (48000,)
    np.testing.assert_allclose(windowed[0], whole[0], atol=1e-5)
    np.testing.assert_allclose(windowed[1], whole[1], atol=1e-5)
