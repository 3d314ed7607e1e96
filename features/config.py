"""Feature-store section of the run config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class StoreConfig:
    """How features are stored: element type, part size and compression.

    bf16 is not offered: numpy and the Zarr v3 spec have no bfloat16 type, and fp16 holds
    CLIP/HuBERT features (|x| far below 65504) to about three significant digits.
    """

    dtype: Literal["float16", "float32"] = "float16"
    # One part (one chunk per array) per write: the preprocess job's write batch size. Reads pay
    # about 1 ms per part, so small parts slow loading (bench/store_read.py: parts of 8 load 16x
    # slower than 256); `affectflow store compact` merges small parts after a job.
    samples_per_chunk: int = 256
    compression: Literal["zstd", "none"] = "zstd"
    compression_level: int = 3

    def validate(self) -> None:
        if self.samples_per_chunk < 1:
            raise ValueError(f"samples_per_chunk must be >= 1, got {self.samples_per_chunk}")
        if not -7 <= self.compression_level <= 22:
            raise ValueError(f"compression_level must be in [-7, 22] (zstd), got {self.compression_level}")
