"""Synthetic MER2025-layout corpus: real mp4/wav/npy media whose emotion is seen and heard.

This module owns the test/demo corpus. `write_corpus` writes the exact MER2025 layout
(``video/``, ``audio/``, ``openface_face/``, ``subtitle_chieng.csv``,
``track2_train_mercaptionplus.csv``, ``track3_train_mercaptionplus.csv``). The label is carried
by the media, never by the subtitle: each emotion has its own colour tint, drawn mouth (and
brows), head-motion pattern, and its own pitch and tone-burst rhythm. The media synthesis is a
set of pure numpy functions (`render_video`, `render_frames`, `crop_faces`, `render_audio`) so
later tests can build odd or corrupt samples from the same parts (`write_sample`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from core.errors import InputError

# The MER 6-way label set (MER2023/2024 `label-6way.npz` spelling).
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "worried", "surprise")

# First word of each open-set list. "surprised" is the emotion-wheel base word for "surprise";
# "neutral" is not in the wheel at all, which is why neutral samples often write `[]` (an empty list means neutral).
MAIN_WORD: dict[str, str] = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "worried": "worried",
    "surprise": "surprised",
}
# Optional second words; every one is a `name` in emotion_wheel/format.csv.
RELATED_WORDS: dict[str, tuple[str, ...]] = {
    "neutral": (),
    "happy": ("joyful", "cheerful", "pleased", "relaxed"),
    "sad": ("sorrowful", "unhappy", "disappointed", "upset"),
    "angry": ("furious", "annoyed", "irritated", "frustrated"),
    "worried": ("anxious", "nervous", "concerned", "fearful"),
    "surprise": ("amazed", "astonished", "shocked", "startled"),
}

FPS = 25
FRAME_SIZE = 256
FACE_SIZE = 112
DEFAULT_SR = 16_000

# Tints are far apart in RGB so that even a whole-clip mean colour separates the classes.
TINT_RGB: dict[str, tuple[int, int, int]] = {
    "neutral": (128, 128, 128),
    "happy": (255, 210, 40),
    "sad": (40, 90, 230),
    "angry": (230, 40, 40),
    "worried": (150, 70, 200),
    "surprise": (40, 210, 170),
}
TINT_NAME = {
    "neutral": "grey",
    "happy": "warm yellow",
    "sad": "cold blue",
    "angry": "red",
    "worried": "purple",
    "surprise": "turquoise",
}
# 0.35 keeps 65% of the face's luminance contrast, enough for a Haar cascade.
TINT_ALPHA = 0.35

# Voice model per emotion: fundamental (Hz), harmonic amplitudes, burst rate (Hz; 0 = steady),
# burst duty cycle, loudness. Fundamentals are far apart so a mean spectrum separates them.
VOICE: dict[str, dict] = {
    "neutral": dict(f0=180.0, harmonics=(1.0, 0.3), rate=0.0, duty=1.0, gain=0.35),
    "happy": dict(f0=523.0, harmonics=(1.0, 0.5, 0.25), rate=6.0, duty=0.5, gain=0.6),
    "sad": dict(f0=147.0, harmonics=(1.0, 0.4), rate=1.2, duty=1.0, gain=0.45),
    "angry": dict(f0=311.0, harmonics=(1.0, 0.0, 0.33, 0.0, 0.2), rate=8.0, duty=0.7, gain=0.8),
    "worried": dict(f0=262.0, harmonics=(1.0, 0.35), rate=3.0, duty=0.6, gain=0.5),
    "surprise": dict(f0=700.0, harmonics=(1.0, 0.2), rate=2.0, duty=0.4, gain=0.6),
}

CUES = {
    "neutral": ("the mouth is a flat line", "the head stays still",
                "the voice is a low, steady hum"),
    "happy": ("the mouth curves up in a smile", "the head bounces lightly",
              "the voice is high and comes in quick, bright bursts"),
    "sad": ("the mouth turns down", "the head slowly droops",
            "the voice is low and swells slowly"),
    "angry": ("the mouth is pressed into a hard line under lowered brows",
              "the head shakes sharply",
              "the voice is harsh and loud, in rapid bursts"),
    "worried": ("the mouth wavers and the brows are raised in the middle", "the head trembles",
                "the voice wobbles in uneven bursts"),
    "surprise": ("the mouth opens into an O", "the face jumps toward the camera",
                 "the voice rises sharply in short bursts"),
}

# Emotion-neutral subtitles: the text must not give the label away.
SUBTITLES: tuple[tuple[str, str], ...] = (
    ("I will take the bus to work tomorrow morning.", "我明天早上坐公交车去上班。"),
    ("The meeting has been moved to three o'clock.", "会议改到三点了。"),
    ("Please put the books back on the shelf.", "请把书放回书架上。"),
    ("We need to buy rice and some vegetables.", "我们需要买米和一些蔬菜。"),
    ("The report is on the desk by the window.", "报告在窗边的桌子上。"),
    ("He said the train leaves at nine.", "他说火车九点开。"),
    ("This room is used for the weekly check.", "这个房间用于每周检查。"),
    ("She moved to the new apartment last month.", "她上个月搬进了新公寓。"),
    ("The store closes at eight in the evening.", "商店晚上八点关门。"),
    ("Let me read the numbers one more time.", "让我再读一遍这些数字。"),
    ("The package arrived this afternoon.", "包裹今天下午到了。"),
    ("We talked about it on the phone yesterday.", "我们昨天在电话里谈过这件事。"),
)

# Geometry in astronaut-image pixels (skimage.data.astronaut(), 512x512): the face that OpenCV's
# frontal Haar cascade finds, and the crop around it that fills a frame.
_FACE_BOX = (177.0, 66.0, 95.0, 95.0)  # x, y, w, h
_CROP_CENTER = (224.0, 120.0)
_CROP_SIDE = 210.0
_BASE = 320  # resolution the mouth is drawn at, before the per-frame warp
_MOUTH = (224.0, 145.0)
_EYES = ((202.0, 101.0), (248.0, 103.0))


@dataclass(frozen=True)
class SampleRecord:
    """What `write_sample` wrote for one sample: the CSV fields and the media parameters."""

    name: str
    emotion: str
    openset: str
    reason: str
    english: str
    chinese: str
    n_frames: int
    sample_rate: int
    channels: int


@dataclass
class CorpusSummary:
    """Where a synthetic corpus went and what is in it."""

    root: Path
    n: int
    counts: dict[str, int] = field(default_factory=dict)
    video_codec: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return (f"{self.n} samples in {self.root} ({self.video_codec}+aac, "
                f"{self.seconds:.1f}s): {per}")


def _check_emotion(emotion: str) -> None:
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")


def _to_base(x: float, y: float) -> tuple[float, float]:
    """Astronaut pixel -> base-canvas pixel."""
    k = _BASE / _CROP_SIDE
    return ((x - _CROP_CENTER[0]) * k + _BASE / 2, (y - _CROP_CENTER[1]) * k + _BASE / 2)


@functools.lru_cache(maxsize=1)
def _base_canvas() -> np.ndarray:
    """The astronaut's head, cropped and resized to a `_BASE` square (RGB), mouth painted over."""
    import cv2
    from skimage import data

    img = data.astronaut()
    half = _CROP_SIDE / 2
    x0, y0 = int(_CROP_CENTER[0] - half), int(_CROP_CENTER[1] - half)
    crop = img[y0:y0 + int(_CROP_SIDE), x0:x0 + int(_CROP_SIDE)]
    base = cv2.resize(crop, (_BASE, _BASE), interpolation=cv2.INTER_AREA)
    # Cover the real smile with skin so the drawn mouth alone says which emotion it is.
    skin = img[120:135, 190:205].reshape(-1, 3).mean(0)
    mx, my = _to_base(*_MOUTH)
    cv2.ellipse(base, (int(mx), int(my)), (36, 20), 0, 0, 360, tuple(float(c) for c in skin), -1)
    base = np.ascontiguousarray(base)
    base.setflags(write=False)
    return base


@functools.lru_cache(maxsize=len(EMOTIONS))
def _face_canvas(emotion: str) -> np.ndarray:
    """The base canvas with this emotion's mouth (and brows) drawn on."""
    import cv2

    img = _base_canvas().copy()
    ink = (90, 25, 25)
    cx, cy = (int(round(v)) for v in _to_base(*_MOUTH))
    if emotion == "neutral":
        cv2.line(img, (cx - 26, cy), (cx + 26, cy), ink, 4, cv2.LINE_AA)
    elif emotion == "happy":
        cv2.ellipse(img, (cx, cy - 10), (28, 16), 0, 0, 180, ink, 5, cv2.LINE_AA)
    elif emotion == "sad":
        cv2.ellipse(img, (cx, cy + 12), (26, 14), 0, 180, 360, ink, 5, cv2.LINE_AA)
    elif emotion == "angry":
        cv2.line(img, (cx - 24, cy), (cx + 24, cy), ink, 8, cv2.LINE_AA)
    elif emotion == "worried":
        xs = np.arange(-26, 27, 2)
        pts = np.stack([cx + xs, cy + 5 * np.sin(xs / 26 * 2 * np.pi)], 1).astype(np.int32)
        cv2.polylines(img, [pts], False, ink, 4, cv2.LINE_AA)
    elif emotion == "surprise":
        # An outlined O: a filled dark blob here stops the Haar cascade from seeing a face.
        cv2.ellipse(img, (cx, cy), (13, 17), 0, 0, 360, ink, 5, cv2.LINE_AA)
    if emotion in ("angry", "worried"):
        # Brows: slanted down toward the nose for anger, up toward the middle for worry.
        sign = 1 if emotion == "angry" else -1
        for (ex, ey), side in zip(_EYES, (-1, 1)):
            bx, by = _to_base(ex, ey - 13)
            outer = (int(bx + side * 18), int(by - sign * 7))
            inner = (int(bx - side * 18), int(by + sign * 7))
            cv2.line(img, outer, inner, (70, 45, 30), 5, cv2.LINE_AA)
    img.setflags(write=False)
    return img


def motion_track(emotion: str, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Per-frame head motion ``[T, 3]`` = (dx px, dy px, zoom) for this emotion's pattern."""
    _check_emotion(emotion)
    t = np.arange(n_frames) / FPS
    phase = rng.uniform(0, 2 * np.pi)
    off = rng.uniform(-6, 6, size=2)  # where the head sits this sample
    dx = np.full(n_frames, off[0])
    dy = np.full(n_frames, off[1])
    zoom = np.ones(n_frames)
    if emotion == "neutral":
        dx += rng.normal(0, 0.4, n_frames)
        dy += rng.normal(0, 0.4, n_frames)
    elif emotion == "happy":
        dy -= 7 * np.abs(np.sin(2 * np.pi * 2.0 * t + phase))
    elif emotion == "sad":
        dy += 12 * t / max(t[-1], 1e-6) + 2 * np.sin(2 * np.pi * 0.5 * t + phase)
        zoom *= 0.97
    elif emotion == "angry":
        dx += 6 * np.sin(2 * np.pi * 7.0 * t + phase)
    elif emotion == "worried":
        dx += 3 * np.sin(2 * np.pi * 1.0 * t + phase) + rng.normal(0, 1.2, n_frames)
        dy += rng.normal(0, 1.2, n_frames)
    elif emotion == "surprise":
        zoom += 0.12 * np.abs(np.sin(2 * np.pi * 1.0 * t + phase))
    return np.stack([dx, dy, zoom], 1)


def _affine(dx: float, dy: float, zoom: float, size: int) -> np.ndarray:
    """2x3 map from base-canvas pixels to frame pixels."""
    k = size / _BASE * zoom
    c = _BASE / 2
    return np.array([[k, 0, size / 2 + dx - k * c], [0, k, size / 2 + dy - k * c]])


def render_video(emotion: str, n_frames: int, rng: np.random.Generator,
                 size: int = FRAME_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``uint8 [T,size,size,3]`` RGB and face boxes ``float [T,4]`` (x0, y0, x1, y1)."""
    import cv2

    _check_emotion(emotion)
    canvas = _face_canvas(emotion)
    track = motion_track(emotion, n_frames, rng)
    brightness = rng.uniform(0.94, 1.06)
    tint = np.asarray(TINT_RGB[emotion], np.float32) * TINT_ALPHA
    fx, fy, fw, fh = _FACE_BOX
    corners = np.array([_to_base(fx, fy), _to_base(fx + fw, fy + fh)])  # base pixels
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    boxes = np.empty((n_frames, 4), np.float64)
    for i, (dx, dy, zoom) in enumerate(track):
        m = _affine(dx, dy, zoom, size)
        warped = cv2.warpAffine(canvas, m, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        mixed = (warped.astype(np.float32) * (1 - TINT_ALPHA) + tint) * brightness
        frames[i] = np.clip(mixed, 0, 255).astype(np.uint8)
        boxes[i] = (corners @ m[:, :2].T + m[:, 2]).reshape(-1)
    return frames, boxes


def render_frames(emotion: str, n_frames: int, rng: np.random.Generator,
                  size: int = FRAME_SIZE) -> np.ndarray:
    """The video frames alone, ``uint8 [T,size,size,3]`` RGB."""
    return render_video(emotion, n_frames, rng, size)[0]


def crop_faces(frames: np.ndarray, boxes: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """OpenFace-style face stack: ``uint8 [T,size,size,3]`` in BGR, one crop per frame."""
    import cv2

    out = np.empty((len(frames), size, size, 3), np.uint8)
    h, w = frames.shape[1:3]
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes)):
        # A little margin, like OpenFace's aligned crops that show the whole chin and brows.
        side = max(x1 - x0, y1 - y0)
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2 + 0.08 * side, 0.68 * side
        a, b = int(max(cx - half, 0)), int(min(cx + half, w))
        c, d = int(max(cy - half, 0)), int(min(cy + half, h))
        crop = cv2.resize(frame[c:d, a:b], (size, size), interpolation=cv2.INTER_AREA)
        out[i] = crop[..., ::-1]  # RGB -> BGR, as OpenFace/OpenCV write them
    return out


def render_audio(emotion: str, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mono voice-like signal, ``float32 [round(seconds*sr)]`` in [-1, 1]."""
    _check_emotion(emotion)
    v = VOICE[emotion]
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = v["f0"] * rng.uniform(0.97, 1.03)
    phase = rng.uniform(0, 2 * np.pi)
    if emotion == "worried":
        inst = f0 * (1 + 0.04 * np.sin(2 * np.pi * 6.0 * t + phase))  # wobble
    elif emotion == "surprise":
        # A chirp that rises through each burst.
        inst = f0 * (1 + 0.7 * ((t * v["rate"] + phase / (2 * np.pi)) % 1.0))
    else:
        inst = np.full(n, f0)
    theta = 2 * np.pi * np.cumsum(inst) / sr + phase
    voice = sum(a * np.sin((k + 1) * theta) for k, a in enumerate(v["harmonics"]) if a)
    voice = voice / sum(v["harmonics"])
    if emotion == "sad":
        env = 0.35 + 0.65 * (0.5 + 0.5 * np.sin(2 * np.pi * v["rate"] * t + phase))
    elif v["rate"]:
        env = (((t * v["rate"] + phase / (2 * np.pi)) % 1.0) < v["duty"]).astype(np.float64)
        # 5 ms ramps so bursts do not click (clicks would smear the spectrum across classes).
        k = max(int(0.005 * sr), 1)
        env = np.convolve(env, np.ones(k) / k, mode="same")
    else:
        env = np.ones(n)
    gain = v["gain"] * rng.uniform(0.9, 1.1)
    y = gain * env * voice + 0.02 * rng.standard_normal(n)
    return np.clip(y, -1, 1).astype(np.float32)


def video_codec() -> str:
    """The video encoder this PyAV build offers: H.264 if present, else MPEG-4 Part 2."""
    import av

    for name in ("libx264", "libopenh264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different types across versions for a missing codec
            continue
    raise RuntimeError(
        "PyAV has no libx264, libopenh264 or mpeg4 encoder; reinstall the `av` wheel")


def mux_frames(box, stream, frames: np.ndarray, fps: int) -> None:
    """Encode RGB ``frames [T,H,W,3]`` on ``stream`` of the open PyAV container ``box``, then flush."""
    import av

    for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(f, format="rgb24")
        vf.pts = i
        vf.time_base = Fraction(1, fps)
        box.mux(stream.encode(vf))
    box.mux(stream.encode())


def write_mp4(path: str | Path, frames: np.ndarray, audio: np.ndarray, sr: int,
              fps: int = FPS) -> None:
    """Write RGB frames and float32 ``audio [channels, samples]`` as mp4 (H.264/yuv420p + AAC)."""
    import av

    codec = video_codec()
    channels = audio.shape[0]
    with av.open(str(path), "w", format="mp4") as box:
        vs = box.add_stream(codec, rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        if codec == "libx264":
            # One thread: deterministic output and fair to the other jobs on a 2-core box.
            vs.options = {"preset": "veryfast", "crf": "18", "threads": "1"}
        else:
            vs.bit_rate = 2_000_000
        aus = box.add_stream("aac", rate=sr, layout="stereo" if channels == 2 else "mono")
        aus.bit_rate = 96_000
        mux_frames(box, vs, frames, fps)
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32), format="fltp",
                                        layout="stereo" if channels == 2 else "mono")
        af.sample_rate = sr
        af.pts = 0
        af.time_base = Fraction(1, sr)
        box.mux(aus.encode(af))
        box.mux(aus.encode())


def openset_text(words: list[str], quoted: bool) -> str:
    """A track-2 list as text, in either spelling: ``[a, b]`` or ``['a', 'b']``."""
    return "[" + ", ".join(f"'{w}'" if quoted else w for w in words) + "]"


def _labels(emotion: str, rng: np.random.Generator) -> list[str]:
    if emotion == "neutral":
        return [] if rng.random() < 0.5 else ["neutral"]
    words = [MAIN_WORD[emotion]]
    if rng.random() < 0.5:
        words.append(str(rng.choice(RELATED_WORDS[emotion])))
    return words


def _reason(emotion: str, english: str) -> str:
    mouth, motion, voice = CUES[emotion]
    return (f"In the text, the person says \"{english}\", which carries no clear emotional cue. "
            f"In the video, the face has a {TINT_NAME[emotion]} cast, {mouth}, and {motion}. "
            f"In the audio, {voice}. "
            f"Therefore, the person's emotional state is most likely {MAIN_WORD[emotion]}.")


def _audio_format(index: int) -> tuple[int, int]:
    """(sample rate, channels): mostly 16 kHz mono, some 44.1 kHz stereo and 22.05 kHz mono."""
    if index % 4 == 3:
        return 44_100, 2
    if index % 7 == 5:
        return 22_050, 1
    return DEFAULT_SR, 1


def write_sample(root: str | Path, name: str, emotion: str, rng: np.random.Generator, *,
                 seconds: float | None = None, sr: int = DEFAULT_SR, channels: int = 1,
                 media: tuple[str, ...] = ("video", "audio", "face")) -> SampleRecord:
    """Write one sample's media under ``root`` (MER2025 layout) and return its CSV fields.

    ``media`` picks which of the three files to write, so tests can make samples with a
    missing wav, video or face stack; the CSV rows are the caller's (see `write_csvs`).
    """
    import soundfile as sf

    _check_emotion(emotion)
    if "/" in name or "\\" in name or not name:
        raise ValueError(
            f"sample name {name!r} must be a non-empty file stem without path separators")
    if channels not in (1, 2):
        raise ValueError(f"channels={channels}: expected 1 or 2")
    root = Path(root)
    if seconds is None:
        seconds = float(rng.uniform(2.0, 3.0))
    n_frames = max(int(round(seconds * FPS)), 1)
    seconds = n_frames / FPS  # the sound lasts exactly as long as the picture
    frames, boxes = render_video(emotion, n_frames, rng)
    mono = render_audio(emotion, seconds, sr, rng)
    # The right channel is quieter so channel averaging visibly differs from taking one channel.
    audio = mono[None] if channels == 1 else np.stack([mono, 0.8 * mono])
    english, chinese = SUBTITLES[int(rng.integers(len(SUBTITLES)))]
    openset = openset_text(_labels(emotion, rng), quoted=bool(rng.random() < 0.5))

    if "video" in media:
        (root / "video").mkdir(parents=True, exist_ok=True)
        write_mp4(root / "video" / f"{name}.mp4", frames, audio, sr)
    if "audio" in media:
        (root / "audio").mkdir(parents=True, exist_ok=True)
        sf.write(root / "audio" / f"{name}.wav", audio.T, sr, subtype="PCM_16", format="WAV")
    if "face" in media:
        face_dir = root / "openface_face" / name
        face_dir.mkdir(parents=True, exist_ok=True)
        np.save(face_dir / f"{name}.npy", crop_faces(frames, boxes), allow_pickle=False)
    return SampleRecord(name=name, emotion=emotion, openset=openset,
                        reason=_reason(emotion, english), english=english, chinese=chinese,
                        n_frames=n_frames, sample_rate=sr, channels=channels)


def write_csvs(root: str | Path, records: list[SampleRecord]) -> None:
    """Write the subtitle, track-2 and track-3 CSVs for ``records``."""
    import pandas as pd

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tables = {
        "subtitle_chieng.csv": ("name", "english", "chinese"),
        "track2_train_mercaptionplus.csv": ("name", "openset"),
        "track3_train_mercaptionplus.csv": ("name", "reason"),
    }
    for fname, cols in tables.items():
        rows = [{c: getattr(r, c) for c in cols} for r in records]
        pd.DataFrame(rows, columns=list(cols)).to_csv(root / fname, index=False, encoding="utf-8")


def sample_name(index: int) -> str:
    """The corpus name of sample ``index``: ``sample_00000000``."""
    return f"sample_{index:08d}"


def corpus_emotions(n: int, seed: int = 0) -> list[str]:
    """Balanced labels for ``n`` samples: round-robin over `EMOTIONS`, shuffled with ``seed``."""
    labels = [EMOTIONS[i % len(EMOTIONS)] for i in range(n)]
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)
    return [labels[j] for j in order]


def write_corpus(out: str | Path, n: int, seed: int = 0) -> CorpusSummary:
    """Write an ``n``-sample MER2025-layout corpus under ``out``; same seed, same corpus."""
    if n < 1:
        raise InputError(f"n={n}: a corpus needs at least one sample")
    t0 = time.perf_counter()
    root = Path(out)
    records = []
    for i, emotion in enumerate(corpus_emotions(n, seed)):
        sr, channels = _audio_format(i)
        # One generator per sample: any sample can be regenerated alone from (seed, index).
        rng = np.random.default_rng([seed, i])
        records.append(write_sample(root, sample_name(i), emotion, rng, sr=sr, channels=channels))
    write_csvs(root, records)
    counts = {e: sum(r.emotion == e for r in records) for e in EMOTIONS}
    return CorpusSummary(root=root, n=n, counts=counts, video_codec=video_codec(),
                         seconds=time.perf_counter() - t0)
