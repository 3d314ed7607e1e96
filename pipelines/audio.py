"""Audio loading and clipping: 16 kHz mono from the wav (else the video's track), 8 clips of 2 s.

Audio files are inputs we do not trust: the header's rate, channels and duration are checked
before anything is decoded, and a long track is read only where its clips lie (:func:`load_clips`).
"""

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


# Bounds on what one audio file may cost, checked from its header before anything is decoded.
# Native rates: below 4 kHz is no speech recording, above 192 kHz no recorder writes; a header
# declaring 1 Hz once made a 200 KB wav resample to 6.1 GiB.
AUDIO_RATE_RANGE = (4_000, 192_000)
MAX_AUDIO_SECONDS = 2 * 3600
MAX_AUDIO_CHANNELS = 64
# A track decoding to at most this many bytes (float32, native rate, all channels) is read whole
# and resampled as the release does; a longer one is read only where the clips (and the ASR
# prefix) lie, each window resampled alone, so that memory does not grow with the file.
MAX_WHOLE_AUDIO_BYTES = 64 * 2**20
# Native samples read on each side of a window so that the resampler's filter has settled.
WINDOW_PAD_S = 0.1


def check_audio_header(rate: int, channels: int, seconds: float | None, label: str) -> None:
    """Raise ``SampleError`` (``audio/refused``) when a header declares a rate, channel count or
    duration outside the bounds above; nothing has been decoded yet."""
    low, high = AUDIO_RATE_RANGE
    if not low <= int(rate or 0) <= high:
        raise SampleError("audio/refused", f"{label} declares a sample rate of {rate} Hz, outside {low}-{high} Hz")
    if not 1 <= int(channels or 0) <= MAX_AUDIO_CHANNELS:
        raise SampleError("audio/refused", f"{label} declares {channels} channels (1-{MAX_AUDIO_CHANNELS} read)")
    if seconds is not None and seconds > MAX_AUDIO_SECONDS:
        raise SampleError("audio/refused", f"{label} declares {seconds:,.0f} s of audio, over the "
                                           f"{MAX_AUDIO_SECONDS:,} s limit")


def _whole(frames: int | None, channels: int) -> bool:
    return frames is not None and frames * channels * 4 <= MAX_WHOLE_AUDIO_BYTES


def clip_bounds(samples: int, sr: int, num_clips: int, seconds: float) -> list[tuple[int, int]]:
    """``(first, end)`` sample of each clip of a ``samples``-long track, as the release cuts them.

    The release's audio loader (ImageBind ``data.py`` ``load_audio``) takes clip times from
    pytorchvideo 0.1.5's ``ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=8)``:
    clip i starts at i·max(D − seconds, 0)/num_clips seconds (D = samples/sr, a float), in exact
    ``Fraction`` arithmetic, and spans samples int(sr·start) to int(sr·(start + seconds)).
    """
    step = Fraction(max(samples / sr - seconds, 0)) / num_clips
    return [(int(sr * step * i), int(sr * (step * i + Fraction(seconds)))) for i in range(num_clips)]


class _Plan:
    """Where the clips (and the ASR prefix) of a long track lie, in native samples.

    The clip positions are `clip_audio`'s, over the resampled length ``ceil(frames·sr/native)``.
    Each window starts on a native sample that falls on the target grid (a multiple of
    native/gcd), so its resampled samples line up with the whole file's.
    """

    def __init__(self, frames: int, native: int, sr: int, num_clips: int, seconds: float, keep: int):
        import math

        self.native, self.sr, self.length, self.num_clips = native, sr, int(round(sr * seconds)), num_clips
        out_len = max(int(math.ceil(frames * float(sr) / native)), self.length)
        step_native = native // math.gcd(native, sr)
        pad = max(1, int(math.ceil(WINDOW_PAD_S * native / step_native))) * step_native
        targets = [(a, min(b, a + self.length)) for a, b in clip_bounds(out_len, sr, num_clips, seconds)]
        if keep:
            targets.append((0, keep))
        self.targets, self.windows = targets, []
        for a, b in targets:
            lo = max(0, (a * native // sr) // step_native * step_native - pad)
            hi = min(frames, -(-b * native // sr) + pad)
            self.windows.append((lo, max(hi, lo)))

    def cut(self, pieces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Clips ``[num_clips, length]`` and the ASR prefix from the windows' mono native samples."""
        rows = []
        for (a, b), (lo, _), piece in zip(self.targets, self.windows, pieces):
            y = _resample(piece, self.native, self.sr) if len(piece) else np.zeros(0, np.float32)
            offset = lo * self.sr // self.native  # exact: lo is on the target grid
            rows.append(y[max(a - offset, 0):max(b - offset, 0)])
        clips = np.zeros((self.num_clips, self.length), np.float32)
        for i, seg in enumerate(rows[:self.num_clips]):
            clips[i, :len(seg)] = seg[:self.length]
        waveform = rows[self.num_clips] if len(rows) > self.num_clips else np.zeros(0, np.float32)
        return clips, np.ascontiguousarray(waveform, np.float32)


def _open_wav(source: str | Path | bytes, label: str):
    import soundfile as sf

    if not isinstance(source, (bytes, bytearray)):
        path = Path(source)
        if not path.is_file():
            raise SampleError("audio/missing", f"{path} does not exist")
    try:
        f = sf.SoundFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source))
    except Exception as exc:  # noqa: BLE001 - soundfile.LibsndfileError, RuntimeError
        raise SampleError("audio/unreadable", f"cannot read {label}: {str(exc)[:200]}") from None
    frames = int(f.frames) if f.frames and f.frames < 2**62 else None
    check_audio_header(f.samplerate, f.channels, frames / f.samplerate if frames else None, label)
    return f, frames


def _read_wav_frames(f, start: int, n: int, label: str) -> np.ndarray:
    try:
        f.seek(start)
        data = f.read(n, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or garbled file
        raise SampleError("audio/unreadable", f"cannot read {label}: {str(exc)[:200]}") from None
    return to_mono(data.T) if len(data) else np.zeros(0, np.float32)


def load_wav(source: str | Path | bytes, sr: int = 16000, label: str | None = None) -> np.ndarray:
    """``float32 [N]`` mono at ``sr`` (:func:`to_mono`), resampled as ``librosa.load`` does (soxr_hq).

    The header is checked first (:func:`check_audio_header`); a track longer than
    ``MAX_WHOLE_AUDIO_BYTES`` decoded is refused here (:func:`load_clips` reads it by windows).
    """
    label = label or str(source)[:200]
    f, frames = _open_wav(source, label)
    with f:
        if not _whole(frames, f.channels):
            raise SampleError("audio/too-long", f"{label} decodes to over {MAX_WHOLE_AUDIO_BYTES // 2**20} MiB")
        y = _read_wav_frames(f, 0, frames, label)
        native = f.samplerate
    if len(y) == 0:
        raise SampleError("audio/unreadable", f"{label} has no samples")
    return _resample(y, native, sr)


def _video_track(box, label: str):
    """(stream, native rate, channels, frames or None) of the first audio track, header checked."""
    if not box.streams.audio:
        raise SampleError("audio/no-track", f"{label} has no audio track and no wav was given")
    stream = box.streams.audio[0]
    native = int(stream.codec_context.sample_rate or stream.rate or 0)
    channels = int(stream.codec_context.channels or 1)
    seconds = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif box.duration:
        seconds = box.duration / 1_000_000  # av.time_base
    check_audio_header(native, channels, seconds, label)
    return stream, native, channels, (int(round(seconds * native)) if seconds else None)


def _decoded_frames(box, stream, channels: int):
    """``(offset, [channels, n] float32)`` for each decoded frame, offsets in native samples."""
    offset = 0
    for frame in box.decode(stream):
        c = frame.to_ndarray()
        # Integer formats (PCM, FLAC tracks) to [-1, 1) as soundfile reads them; AAC decodes to floats.
        c = c.astype(np.float32) / (2.0 ** (8 * c.dtype.itemsize - 1)) if c.dtype.kind == "i" else (
            (c.astype(np.float32) - 128) / 128 if c.dtype == np.uint8 else c.astype(np.float32))
        if c.shape[0] == 1 and channels > 1:  # packed formats give [1, n*channels]; planar [channels, n]
            c = c.reshape(-1, channels).T
        yield offset, c
        offset += c.shape[1]


def _decode_whole(box, stream, channels: int, label: str) -> np.ndarray:
    parts, total = [], 0
    for _, c in _decoded_frames(box, stream, channels):
        total += c.nbytes
        if total > MAX_WHOLE_AUDIO_BYTES:
            raise SampleError("audio/too-long", f"{label} decodes to over {MAX_WHOLE_AUDIO_BYTES // 2**20} MiB, "
                                                "more than its header declares")
        parts.append(c)
    if not parts:
        raise SampleError("audio/no-track", f"{label}'s audio track holds no samples")
    return to_mono(np.concatenate(parts, axis=1))


def load_video_audio(source: str | Path | bytes, sr: int = 16000, label: str | None = None) -> np.ndarray:
    """``float32 [N]`` mono at ``sr`` (:func:`to_mono`) from the video's first audio track (PyAV).

    The header is checked first; a track decoding to more than ``MAX_WHOLE_AUDIO_BYTES`` is refused.
    """
    import av

    label = label or str(source)[:200]
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with av.open(handle) as box:
            stream, native, channels, _ = _video_track(box, label)
            y = _decode_whole(box, stream, channels, label)
    except SampleError:
        raise
    except Exception as exc:  # noqa: BLE001 - av.error.* for corrupt containers
        raise SampleError("audio/unreadable", f"cannot decode the audio of {label}: {str(exc)[:200]}") from None
    return _resample(y, native, sr)


def load_clips(source: str | Path | bytes, kind: str, sr: int = 16000, num_clips: int = 8, seconds: float = 2.0,
               keep_s: float = 0.0, label: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(clips [num_clips, sr·seconds], first keep_s seconds)`` of a wav (``kind="wav"``) or a
    video's audio track (``"video"``), in bounded memory.

    A track within ``MAX_WHOLE_AUDIO_BYTES`` is read whole and cut by :func:`clip_audio`, as the
    release does. A longer one is read only in the clips' windows (a wav by seeking; a video in
    one pass that keeps only the windows' samples and stops after the last one).
    """
    import av

    label = label or str(source)[:200]
    keep = int(keep_s * sr)
    if kind == "wav":
        f, frames = _open_wav(source, label)
        with f:
            native, channels = f.samplerate, f.channels
            if _whole(frames, channels):
                y = _read_wav_frames(f, 0, frames, label)
                if len(y) == 0:
                    raise SampleError("audio/unreadable", f"{label} has no samples")
                y = _resample(y, native, sr)
                return clip_audio(y, sr, num_clips, seconds), y[:keep]
            if frames is None:
                raise SampleError("audio/refused", f"{label} does not declare its length")
            plan = _Plan(frames, native, sr, num_clips, seconds, keep)
            pieces = [_read_wav_frames(f, lo, hi - lo, label) for lo, hi in plan.windows]
        return plan.cut(pieces)
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with av.open(handle) as box:
            stream, native, channels, frames = _video_track(box, label)
            if frames is None or _whole(frames, channels):
                y = _resample(_decode_whole(box, stream, channels, label), native, sr)
                return clip_audio(y, sr, num_clips, seconds), y[:keep]
            plan = _Plan(frames, native, sr, num_clips, seconds, keep)
            pieces: list[list[np.ndarray]] = [[] for _ in plan.windows]
            end = max(hi for _, hi in plan.windows)
            for offset, c in _decoded_frames(box, stream, channels):
                n = c.shape[1]
                for k, (lo, hi) in enumerate(plan.windows):
                    a, b = max(lo, offset), min(hi, offset + n)
                    if a < b:
                        pieces[k].append(to_mono(c[:, a - offset:b - offset]))
                if offset + n >= end:
                    break
    except SampleError:
        raise
    except Exception as exc:  # noqa: BLE001 - av.error.* for corrupt containers
        raise SampleError("audio/unreadable", f"cannot decode the audio of {label}: {str(exc)[:200]}") from None
    return plan.cut([np.concatenate(p) if p else np.zeros(0, np.float32) for p in pieces])


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
