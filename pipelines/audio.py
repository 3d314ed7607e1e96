"""Audio loading and clipping: 16 kHz mono from the wav (else the video's track), 8 clips of 2 s."""

from __future__ import annotations

import io
from fractions import Fraction
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


def clip_bounds(samples: int, sr: int, num_clips: int, seconds: float) -> list[tuple[int, int]]:
    """``(first, end)`` sample of each clip of a ``samples``-long track, as the release cuts them.

    The release's audio loader (ImageBind ``data.py`` ``load_audio``) takes clip times from
    pytorchvideo 0.1.5's ``ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=8)``:
    clip i starts at i·max(D − seconds, 0)/num_clips seconds (D = samples/sr, a float), in exact
    ``Fraction`` arithmetic, and spans samples int(sr·start) to int(sr·(start + seconds)).
    """
    step = Fraction(max(samples / sr - seconds, 0)) / num_clips
    return [(int(sr * step * i), int(sr * (step * i + Fraction(seconds)))) for i in range(num_clips)]


def clip_audio(y: np.ndarray, sr: int = 16000, num_clips: int = 8, seconds: float = 2.0) -> np.ndarray:
    """``float32 [num_clips, sr·seconds]``: zero-pad to ≥ ``seconds``, then the clips of `clip_bounds`.

    In exact arithmetic every clip is sr·seconds samples long; with a ``seconds`` that is not a
    whole number of samples a slice can differ by one, so each clip is fixed to that length.
    """
    length = int(round(sr * seconds))
    y = np.asarray(y, np.float32)
    if len(y) < length:
        y = np.pad(y, (0, length - len(y)))
    out = np.zeros((num_clips, length), np.float32)
    for i, (a, b) in enumerate(clip_bounds(len(y), sr, num_clips, seconds)):
        piece = y[a:b][:length]
        out[i, :len(piece)] = piece
    return out
