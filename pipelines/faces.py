"""Face stacks by backend: pre-extracted OpenFace npy, OpenCV Haar cascade, or py-feat.

Channel order: the released model saw OpenFace crops as OpenCV wrote them, **BGR**, and so
do we: the ``openface`` stack is used as stored, and the ``opencv``/``pyfeat`` backends
(which crop RGB frames) flip their crops to BGR so that every backend feeds CLIP what the
trained projector expects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import InputError, MissingFileError
from pipelines.errors import SampleError
from pipelines.frames import uniform_indices

BACKENDS = ("openface", "opencv", "pyfeat")


def load_face_stack(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """An OpenFace stack ``uint8 [T, H, W, 3]`` (BGR), loaded with pickle off and checked.

    ``data``: the file's bytes (a WebDataset member); ``path`` then only names it in errors.
    """
    import io

    path = Path(path)
    if data is None and not path.is_file():
        raise SampleError("face/missing", f"{path} does not exist")
    _check_declared_size(path, data)
    try:
        # A file is mapped, not read: only the frames picked later (8 of maybe thousands) are read.
        stack = (np.load(io.BytesIO(data), allow_pickle=False) if data is not None
                 else np.load(path, mmap_mode="r", allow_pickle=False))
    except Exception as exc:  # noqa: BLE001 - ValueError for pickled/object arrays, OSError/EOFError when truncated
        raise SampleError("face/unreadable", f"cannot load {path}: {str(exc)[:200]}") from None
    if not isinstance(stack, np.ndarray) or stack.ndim != 4 or stack.shape[-1] != 3:
        raise SampleError("face/bad-shape",
                          f"{path} holds shape {getattr(stack, 'shape', None)}, expected [T, H, W, 3]")
    if stack.shape[0] == 0 or stack.shape[1] == 0 or stack.shape[2] == 0:
        raise SampleError("face/empty", f"{path} holds an empty stack {stack.shape}")
    if stack.dtype != np.uint8:
        raise SampleError("face/bad-dtype", f"{path} holds {stack.dtype}, expected uint8")
    return stack


def _check_declared_size(path: Path, data: bytes | None) -> None:
    """Refuse a stack whose header declares more data than its file holds, before numpy allocates it
    (a few bytes declaring terabytes made ``np.load`` raise MemoryError)."""
    import io

    from numpy.lib import format as npy

    try:
        with (io.BytesIO(data) if data is not None else open(path, "rb")) as fp:
            version = npy.read_magic(fp)
            read = npy.read_array_header_2_0 if version == (2, 0) else npy.read_array_header_1_0
            shape, _, dtype = read(fp)
            room = (len(data) if data is not None else path.stat().st_size) - fp.tell()
    except Exception:  # noqa: BLE001 - not an .npy header: np.load names it below
        return
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize if not dtype.hasobject else 0
    if declared > room:
        raise SampleError("face/unreadable", f"cannot load {path}: its header declares {shape} {dtype} "
                                             f"({declared:,} bytes) but it holds {max(room, 0):,}")


def sample_faces(stack: np.ndarray, num_frames: int = 8, size: int = 224) -> np.ndarray:
    """Resize each crop to ``size``² (bilinear) and take the uniform indices: ``uint8 [num_frames, size, size, 3]``.

    Resizing is per crop, so resizing only the picked crops gives the same result.
    """
    import cv2

    picked = stack[uniform_indices(len(stack), num_frames)]
    if picked.shape[1:3] == (size, size):
        return np.ascontiguousarray(picked)
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in picked])


def largest_box(boxes: np.ndarray) -> tuple[int, int, int, int] | None:
    """The (x, y, w, h) of largest area, or None."""
    if boxes is None or len(boxes) == 0:
        return None
    areas = boxes[:, 2] * boxes[:, 3]
    x, y, w, h = (int(v) for v in boxes[int(np.argmax(areas))])
    return x, y, w, h


def crop_to(frame: np.ndarray, box: tuple[int, int, int, int] | None, size: int) -> np.ndarray:
    """The box of ``frame`` (the whole frame when None) resized to ``size``²."""
    import cv2

    if box is not None:
        x, y, w, h = box
        frame = frame[max(y, 0):y + h, max(x, 0):x + w]
    if frame.shape[:2] == (size, size):
        return np.ascontiguousarray(frame)
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)


def haar_available() -> str:
    """"" when this OpenCV has the bundled Haar cascades, else why not (OpenCV 5 moved them out)."""
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        return (f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 dropped the Haar cascades "
                "from the main package): install opencv-python-headless<5 for faces=opencv")
    path = Path(getattr(cv2, "data", None).haarcascades if hasattr(cv2, "data") else "")
    if not (path / "haarcascade_frontalface_default.xml").is_file():
        return f"OpenCV's Haar cascade file is missing under {path}"
    return ""


class HaarFaces:
    """OpenCV's bundled frontal-face Haar cascade (works offline); largest face per frame."""

    def __init__(self, min_size: int = 24):
        import cv2

        why = haar_available()
        if why:
            raise InputError(f"faces=opencv: {why}")
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise InputError(f"faces=opencv: cannot load the OpenCV Haar cascade {path}")
        self.min_size = min_size

    def detect(self, frame_rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        import cv2

        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        boxes = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4,
                                              minSize=(self.min_size, self.min_size))
        return largest_box(np.asarray(boxes).reshape(-1, 4)) if len(boxes) else None


class PyFeatFaces:
    """py-feat's face detector with weights from a local model directory (optional extra ``pyfeat``).

    py-feat downloads its weights from the Hugging Face hub by default; pointing it at
    ``model_dir`` (the hub cache layout) with ``HF_HUB_OFFLINE=1`` keeps it local.
    """

    def __init__(self, model_dir: str | Path | None, device: str = "cpu"):
        import os

        if model_dir is None or not Path(model_dir).is_dir():
            raise MissingFileError(f"faces=pyfeat needs a local py-feat model directory, got {model_dir!r}")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_HOME"] = str(model_dir)
        try:
            from feat import Detector
        except ImportError as exc:
            raise InputError("faces=pyfeat needs the optional extra: pip install 'affectflow[pyfeat]'") from exc
        self.detector = Detector(device=device)

    def detect(self, frame_rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        import torch

        image = torch.from_numpy(frame_rgb).permute(2, 0, 1)[None].float()
        faces = self.detector.detect_faces(image)[0]
        boxes = np.array([[f[0], f[1], f[2] - f[0], f[3] - f[1]] for f in faces if len(f) >= 4])
        return largest_box(boxes.reshape(-1, 4)) if len(boxes) else None


def detect_faces(frames_rgb: np.ndarray, detector, size: int = 224) -> tuple[np.ndarray, int]:
    """Largest face of each frame, BGR ``uint8 [N, size, size, 3]``, and how many frames fell back to the
    whole frame."""
    crops, fallbacks = [], 0
    for frame in frames_rgb:
        box = detector.detect(frame)
        fallbacks += box is None
        crops.append(crop_to(frame, box, size)[..., ::-1])  # RGB -> BGR, as OpenFace stacks
    return np.ascontiguousarray(np.stack(crops)), fallbacks
