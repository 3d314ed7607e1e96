"""Model and training sections of the run config (DESIGN §5-6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class ModelConfig:
    preset: Literal["tiny", "qwen2.5-7b"] = "tiny"
    visual_stream: Literal["face", "frame"] = "face"
    pooling: Literal["raw", "softmax"] = "raw"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05

    def validate(self) -> None:
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be within [0, 1), got {self.lora_dropout}")


@dataclass
class TrainConfig:
    workers: int = 1
    zero_stage: int = 2
    epochs: int = 1
    global_batch_size: int = 8
    micro_batch_size: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0
    max_tokens: int = 1024
    checkpoint_every: int = 0

    def validate(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.micro_batch_size < 1 or self.global_batch_size < 1:
            raise ValueError("global_batch_size and micro_batch_size must be >= 1")
