"""Audio loading and clipping: 16 kHz mono from the wav (else the video's track), 8 clips of 2 s."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pipelines.errors import SampleError


def _resample(y: np.ndarray, sr: int, target: int) -> np.ndarray:
    """``librosa.resample(y, orig_sr=sr, target_sr=target, res_type="soxr_hq")``, without importing librosa.

    librosa hands this mode to soxr and fixes the length to ``ceil(len·target/sr)``; importing
    librosa itself costs ~200 MB (numba, llvmlite) and a ~10 s JIT warm-up in every decode worker,
    so the stage calls soxr directly (a test checks equality with librosa).
    """
    import soxr

    y = np.asarray(y, np.float32)
    if sr == target:
        return y
    out = soxr.resample(y, sr, target, quality="soxr_hq")
    n = int(np.ceil(len(y) * float(target) / sr))
    if len(out) < n:
        out = np.pad(out, (0, n - len(out)))
    return np.ascontiguousarray(out[:n], np.float32)


def to_mono(channels: np.ndarray) -> np.ndarray:
    """``[C, N] -> [N]`` as the released AffectGPT does: two channels averaged, otherwise the first kept.

    (A 5.1 track's first channel is its front left; averaging all six would mix in the LFE.)
    """
    if channels.shape[0] == 2:
        return channels.mean(axis=0)
    return channels[0]


def load_wav(source: str | Path | bytes, sr: int = 16000, label: str | None = None) -> np.ndarray:
    """``float32 [N]`` mono at ``sr`` (:func:`to_mono`), resampled as ``librosa.load`` does (soxr_hq)."""
    import soundfile as sf

    label = label or str(source)[:200]
    if not isinstance(source, (bytes, bytearray)):
        path = Path(source)
        if not path.is_file():
            raise SampleError("audio/missing", f"{path} does not exist")
    try:
        data, native = sf.read(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source),
                               dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile.LibsndfileError, RuntimeError
        raise SampleError("audio/unreadable", f"cannot read {label}: {str(exc)[:200]}") from None
    if data.shape[0] == 0:
        raise SampleError("audio/unreadable", f"{label} has no samples")
    return _resample(to_mono(data.T), native, sr)


def load_video_audio(source: str | Path | bytes, sr: int = 16000, label: str | None = None) -> np.ndarray:
    """``float32 [N]`` mono at ``sr`` (:func:`to_mono`) from the video's first audio track (PyAV)."""
    import av

    label = label or str(source)[:200]
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with av.open(handle) as box:
            if not box.streams.audio:
                raise SampleError("audio/no-track", f"{label} has no audio track and no wav was given")
            stream = box.streams.audio[0]
            native = stream.codec_context.sample_rate or stream.rate
            chunks = [frame.to_ndarray().astype(np.float32) for frame in box.decode(stream)]
    except SampleError:
        raise
    except Exception as exc:  # av.error.* for corrupt containers
        raise SampleError("audio/unreadable", f"cannot decode the audio of {label}: {str(exc)[:200]}") from None
    if not chunks:
        raise SampleError("audio/no-track", f"{label}'s audio track holds no samples")
    # Planar formats give [channels, n]; packed ones [1, n*channels].
    channels = stream.codec_context.channels or 1
    parts = []
    for c in chunks:
        if c.shape[0] == 1 and channels > 1:
            c = c.reshape(-1, channels).T
        parts.append(c)
    return _resample(to_mono(np.concatenate(parts, axis=1)), int(native), sr)


def clip_audio(y: np.ndarray, sr: int = 16000, num_clips: int = 8, seconds: float = 2.0) -> np.ndarray:
    """``float32 [num_clips, sr·seconds]``: zero-pad to ≥ ``seconds``, clip i spans [s_i, s_i+seconds), s_i = i·max(D−seconds, 0)/(num_clips−1).

    Samples int(sr·start) to int(sr·end) as the reference; the float rounding can make one
    slice a sample short or long, so each clip is fixed to exactly sr·seconds (zero-padded).
    """
    length = int(round(sr * seconds))
    y = np.asarray(y, np.float32)
    if len(y) < length:
        y = np.pad(y, (0, length - len(y)))
    duration = len(y) / sr
    step = max(duration - seconds, 0.0) / max(num_clips - 1, 1)
    out = np.zeros((num_clips, length), np.float32)
    for i in range(num_clips):
        start = i * step
        piece = y[int(sr * start):int(sr * (start + seconds))][:length]
        out[i, :len(piece)] = piece
    return out
