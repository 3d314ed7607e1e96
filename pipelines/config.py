"""Preprocessing section of the run config (DESIGN §4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class PreprocessConfig:
    layout: Literal["mer2025", "folder", "webdataset"] = "mer2025"
    faces: Literal["openface", "opencv", "pyfeat"] = "openface"
    num_frames: int = 8
    image_size: int = 224
    sample_rate: int = 16000
    num_clips: int = 8
    clip_seconds: float = 2.0
    batch_size: int = 8
    max_failure_rate: float = 0.01

    def validate(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.sample_rate < 1000:
            raise ValueError(f"sample_rate must be >= 1000 Hz, got {self.sample_rate}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ValueError(f"max_failure_rate must be within [0, 1], got {self.max_failure_rate}")
