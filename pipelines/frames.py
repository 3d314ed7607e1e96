"""Frame sampling and decoding: 8 frames at uniform indices, decoded at 224×224 by decord."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pipelines.errors import SampleError


def uniform_indices(n: int, k: int = 8) -> np.ndarray:
    """floor(i·n/k) for i < k when n ≥ k; else every index once, then the last repeated up to k."""
    if n < 1:
        raise ValueError(f"cannot sample from {n} frames")
    if n >= k:
        return (np.arange(k) * n) // k
    return np.concatenate([np.arange(n), np.full(k - n, n - 1)]).astype(np.int64)


def decode_frames(source: str | Path | bytes, num_frames: int = 8, size: int = 224,
                  label: str | None = None) -> np.ndarray:
    """``uint8 [num_frames, size, size, 3]`` RGB frames at the uniform indices (no aspect kept).

    ``source`` is a path or the file's bytes (WebDataset); ``label`` names it in errors.
    """
    import decord

    label = label or str(source)[:200]
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise SampleError("video/unreadable", f"{label} is empty (0 bytes)")
        handle = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise SampleError("video/missing", f"{path} does not exist")
        if path.stat().st_size == 0:
            raise SampleError("video/unreadable", f"{path} is empty (0 bytes)")
        handle = str(path)
    try:
        reader = decord.VideoReader(handle, width=size, height=size, num_threads=1)
        n = len(reader)
        if n < 1:
            raise SampleError("video/unreadable", f"{label} has no video frames")
        frames = reader.get_batch(list(uniform_indices(n, num_frames))).asnumpy()
    except SampleError:
        raise
    except Exception as exc:  # noqa: BLE001 - decord raises RuntimeError/DECORDError with ffmpeg's text
        raise SampleError("video/unreadable", f"cannot decode {label}: {str(exc).splitlines()[0][:200]}") from None
    return np.ascontiguousarray(frames, dtype=np.uint8)
