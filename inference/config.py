"""Labeling and scoring sections of the run config (DESIGN §7-8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class LabelConfig:
    task: Literal["ov", "description", "both"] = "ov"
    batch_size: int = 8
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 0.9

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be within (0, 1], got {self.top_p}")


@dataclass
class ScoreConfig:
    wheel_dir: str = "../shared/emotion_wheel"
