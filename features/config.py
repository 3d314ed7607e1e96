"""Feature-store section of the run config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class StoreConfig:
    dtype: Literal["float16", "float32", "bfloat16"] = "float16"
    samples_per_chunk: int = 64

    def validate(self) -> None:
        if self.samples_per_chunk < 1:
            raise ValueError(f"samples_per_chunk must be >= 1, got {self.samples_per_chunk}")
