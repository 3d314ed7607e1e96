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
    # The model's actor pool. On a 2-CPU box actors need a fraction of a CPU or the job stalls
    # (DESIGN §10). actor_gpus 0 = one GPU per actor when the cluster has GPUs, else none.
    actors: int = 1
    actor_cpus: float = 0.5
    actor_gpus: float = 0.0
    # "auto": CUDA (bf16) when the actor sees a GPU, else the CPU (fp32).
    device: str = "auto"
    torch_threads: int = 1

    def validate(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.actor_cpus < 0 or self.actor_gpus < 0:
            raise ValueError("actor_cpus and actor_gpus must be >= 0")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads must be >= 0, got {self.torch_threads}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be within (0, 1], got {self.top_p}")


@dataclass
class ScoreConfig:
    wheel_dir: str = "../shared/emotion_wheel"
