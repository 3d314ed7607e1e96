"""CPU stages: manifest row -> decoded sample (frames, faces, audio clips, subtitle), bad input recorded as data.

Each stage is a small callable class over the pure functions of `frames`, `faces` and
`audio`; `DecodeStage` runs them over a batch of manifest rows and never raises: a
`SampleError` (or anything unexpected) becomes ``status="failed"`` with an ``error`` naming
the file. `WriteStage` ends a preprocessing stream: each batch becomes one store part.
`operators.py` is the only place that turns these into Ray ``map_batches`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from core.sections import PreprocessConfig
from features.labels import LABEL_COLUMNS, openset_to_store, reason_to_store
from pipelines.audio import load_clips
from pipelines.errors import SampleError
from pipelines.faces import HaarFaces, PyFeatFaces, detect_faces, load_face_stack, sample_faces
from pipelines.frames import decode_frames

OK, FAILED = "ok", "failed"


@dataclass
class DecodedSample:
    """One sample after the CPU stages; the arrays are zeros when ``status`` is ``failed``."""

    name: str
    subtitle: str
    status: str
    error: str
    frames: np.ndarray  # uint8 [8, 224, 224, 3] RGB
    faces: np.ndarray  # uint8 [8, 224, 224, 3] BGR, as OpenFace wrote them
    clips: np.ndarray  # float32 [8, 32000] at 16 kHz
    face_fallback: int = 0  # frames where no face was found and the whole frame was used
    waveform: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # for ASR only
    openset: str = ""  # the labels as stored: "[a, b]", "[]" (neutral) or "" (unlabelled); features.labels
    reason: str = ""  # the description, "" when there is none


def _source(row: dict[str, Any], kind: str) -> tuple[Any, str]:
    """(path or bytes, label for messages) of the ``video``/``audio`` of a row."""
    data = row.get(f"{kind}_bytes")
    label = row.get(kind) or ""
    if data is not None and len(data) > 0:
        return bytes(data), f"{label} (in shard)"
    return label, label


def fetch_media(row: dict[str, Any], kinds: tuple[str, ...] = ("video", "audio", "face"),
                storage_options: dict | None = None) -> dict[str, Any]:
    """The row with ``{kind}_bytes`` filled for each media path that is an fsspec URL (object storage).

    The stages then decode bytes, as for a WebDataset shard; local paths are left to them.
    """
    import fsspec

    out = dict(row)
    for kind in kinds:
        url = str(row.get(kind) or "")
        data = row.get(f"{kind}_bytes")
        if "://" not in url or (data is not None and len(data) > 0):
            continue
        try:
            with fsspec.open(url, "rb", **(storage_options or {})) as f:
                out[f"{kind}_bytes"] = f.read()
        except FileNotFoundError:
            raise SampleError(f"{kind}/missing", f"{url} does not exist") from None
        except Exception as exc:  # noqa: BLE001 - network, permissions: name the object, keep the job going
            raise SampleError(f"{kind}/unreadable",
                              f"cannot read {url}: {type(exc).__name__}: {str(exc)[:200]}") from None
    return out


class FrameStage:
    """8 RGB frames at uniform indices (`pipelines.frames`), decoded at ``size``² with decord."""

    def __init__(self, num_frames: int = 8, size: int = 224):
        self.num_frames, self.size = num_frames, size

    def __call__(self, row: dict[str, Any]) -> np.ndarray:
        source, label = _source(row, "video")
        if not label:
            raise SampleError("video/missing", f"sample {row['name']!r} has no video")
        return decode_frames(source, self.num_frames, self.size, label=label)


class FaceStage:
    """Face crops by backend: ``openface`` npy (BGR as stored), ``opencv`` Haar cascade or ``pyfeat``."""

    def __init__(self, backend: str = "openface", num_frames: int = 8, size: int = 224,
                 pyfeat_model: str | None = None):
        self.backend, self.num_frames, self.size = backend, num_frames, size
        self.detector = None
        if backend == "opencv":
            self.detector = HaarFaces()
        elif backend == "pyfeat":
            self.detector = PyFeatFaces(pyfeat_model)
        elif backend != "openface":
            raise ValueError(f"faces backend {backend!r} is not one of openface, opencv, pyfeat")

    def __call__(self, row: dict[str, Any], frames: np.ndarray) -> tuple[np.ndarray, int]:
        if self.backend == "openface":
            if not row.get("face"):
                raise SampleError("face/missing", f"sample {row['name']!r} has no OpenFace npy")
            data = row.get("face_bytes")
            data = bytes(data) if data is not None and len(data) else None
            return sample_faces(load_face_stack(row["face"], data), self.num_frames, self.size), 0
        return detect_faces(frames, self.detector, self.size)


class AudioStage:
    """16 kHz mono from the wav when present, else from the video's track, cut into 8 clips of 2 s."""

    def __init__(self, sample_rate: int = 16000, num_clips: int = 8, clip_seconds: float = 2.0,
                 keep_waveform_s: float = 0.0):
        self.sr, self.num_clips, self.seconds = sample_rate, num_clips, clip_seconds
        self.keep_s = keep_waveform_s

    def __call__(self, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        wav, wav_label = _source(row, "audio")
        if wav_label:
            source, kind, label = wav, "wav", wav_label
        else:
            (source, label), kind = _source(row, "video"), "video"
        # Bounded: the header is checked first and a long track is read only where the clips lie.
        return load_clips(source, kind, self.sr, self.num_clips, self.seconds, self.keep_s, label=label)


# The longest subtitle stored, in characters: four times what a 1,024-token prompt holds of English
# (~4 characters a token). A prompt keeps at most that budget of the subtitle anyway, and a
# 20 MB subtitle tokenized whole before it was shortened took 3.9 GiB and a minute.
MAX_SUBTITLE_CHARS = 16_384
# The audio kept for ASR, in seconds: Whisper reads one 30-second window.
ASR_SECONDS = 30.0


def clean_subtitle(text: Any) -> str:
    """The subtitle as stored: a string with outer whitespace stripped (NaN/None -> ""), cut to
    ``MAX_SUBTITLE_CHARS`` before anything tokenizes it."""
    if text is None or (isinstance(text, float) and text != text):
        return ""
    return str(text).strip()[:MAX_SUBTITLE_CHARS]


class DecodeStage:
    """Batch of manifest rows -> batch of decoded samples (columns of `DecodedSample`); never raises.

    ``p``: the `PreprocessConfig` (faces, frames, image size, audio clips, ASR); default its defaults.
    """

    def __init__(self, p: PreprocessConfig | None = None, storage_options: dict | None = None):
        p = p if p is not None else PreprocessConfig()
        self.storage_options = storage_options
        self.remote_kinds = ("video", "audio", "face") if p.faces == "openface" else ("video", "audio")
        self.frames = FrameStage(p.num_frames, p.image_size)
        self.faces = FaceStage(p.faces, p.num_frames, p.image_size, p.pyfeat_model or None)
        self.audio = AudioStage(p.sample_rate, p.num_clips, p.clip_seconds, ASR_SECONDS if p.asr else 0.0)
        self.shapes = {
            "frames": (p.num_frames, p.image_size, p.image_size, 3),
            "clips": (p.num_clips, int(round(p.sample_rate * p.clip_seconds))),
        }
        self.asr = p.asr

    def decode(self, row: dict[str, Any]) -> DecodedSample:
        """One row -> one `DecodedSample`; bad input gives ``status="failed"`` and zero arrays."""
        name = str(row.get("name", ""))
        subtitle = clean_subtitle(row.get("subtitle"))
        labels = dict(openset=openset_to_store(row.get("openset")), reason=reason_to_store(row.get("reason")))
        zeros = DecodedSample(name, subtitle, FAILED, "", np.zeros(self.shapes["frames"], np.uint8),
                              np.zeros(self.shapes["frames"], np.uint8), np.zeros(self.shapes["clips"], np.float32),
                              **labels)
        if row.get("error"):
            zeros.error = str(row["error"])
            return zeros
        try:
            row = fetch_media(row, self.remote_kinds, self.storage_options)
            frames = self.frames(row)
            faces, fallback = self.faces(row, frames)
            clips, waveform = self.audio(row)
        except SampleError as exc:
            zeros.error = exc.record()
            return zeros
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not take down the job: record it as bad input
            zeros.error = f"internal/{type(exc).__name__}: sample {name!r}: {str(exc)[:300]}"
            return zeros
        return DecodedSample(name, subtitle, OK, "", frames, faces, clips, fallback, waveform, **labels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["name"])
        rows = [{k: v[i] for k, v in batch.items()} for i in range(n)]
        return stack_samples([self.decode(r) for r in rows], with_waveform=self.asr)


def stack_samples(samples: list[DecodedSample], with_waveform: bool = False) -> dict[str, np.ndarray]:
    """Decoded samples -> one columnar batch (what Ray Data passes between stages)."""
    out = {
        "name": np.array([s.name for s in samples], dtype=object),
        "subtitle": np.array([s.subtitle for s in samples], dtype=object),
        "status": np.array([s.status for s in samples], dtype=object),
        "error": np.array([s.error for s in samples], dtype=object),
        "frames": np.stack([s.frames for s in samples]),
        "faces": np.stack([s.faces for s in samples]),
        "clips": np.stack([s.clips for s in samples]),
        "face_fallback": np.array([s.face_fallback for s in samples], dtype=np.int32),
        "openset": np.array([s.openset for s in samples], dtype=object),
        "reason": np.array([s.reason for s in samples], dtype=object),
    }
    if with_waveform:
        out["waveform"] = np.array([s.waveform for s in samples] + [None], dtype=object)[:-1]
    return out


class WriteStage:
    """Writes each batch as one store part; returns the summary columns (name, status, error, face_fallback)."""

    def __init__(self, store: str, specs_json: Sequence[str], storage_options: dict | None = None):
        from features.spec import EncoderSpec
        from features.store import FeatureStore

        self.store = FeatureStore(store, storage_options)
        self.specs = [EncoderSpec.from_json(s) for s in specs_json]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = {"name", "subtitle", "status", "error", *LABEL_COLUMNS, *(s.modality for s in self.specs)}
        names = [str(n) for n in batch["name"]]
        if len(set(names)) != len(names):
            # A key repeated within one batch (two shards holding one sample): a part holds a
            # name once, so the first copy is stored and the rest dropped.
            first = np.array([names.index(n) == i for i, n in enumerate(names)])
            batch = {k: np.asarray(v)[first] for k, v in batch.items()}
        summary = self.store.write_part(self.specs, {k: v for k, v in batch.items() if k in keep})
        return {**{k: np.asarray(v, dtype=object) for k, v in summary.items()},
                "face_fallback": np.asarray(batch.get("face_fallback", np.zeros(len(batch["name"]))), np.int32)}
