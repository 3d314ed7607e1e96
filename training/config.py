"""Model and training sections of the run config (DESIGN §5-6).

The defaults reproduce the released run where it matters (LoRA r16/a32/d0.05, AdamW with
weight decay 0.05, a constant LR of 1e-5, max 1,024 tokens, seed from the top level); the
rest (global/micro batch, ZeRO stage, warmup + cosine) is ours and configurable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class ModelConfig:
    """Which model to build: preset, visual stream, pooling and LoRA shape."""

    preset: Literal["tiny", "qwen2.5-7b"] = "tiny"
    # The base LLM folder; empty: `<paths.models>/qwen2` for tiny (from `affectflow tiny-models`).
    llm_path: str = ""
    visual_stream: Literal["face", "frame"] = "face"
    pooling: Literal["raw", "softmax"] = "raw"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = False

    def validate(self) -> None:
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be within [0, 1), got {self.lora_dropout}")


@dataclass
class TrainConfig:
    """The loop: data parallelism, batch, optimiser, schedule, checkpoints."""

    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    zero_stage: int = 2
    epochs: int = 1
    # Optimizer steps per epoch; 0 = one pass over the data (the released run used 5,000).
    steps_per_epoch: int = 0
    global_batch_size: int = 8
    micro_batch_size: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    # Linear warmup then cosine down to lr * min_lr_ratio; 0 and 1.0 give the released constant LR.
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0
    grad_clip: float = 0.0
    max_tokens: int = 1024
    # Probability of the description task when a sample has a reason (else OV labels).
    description_prob: float = 0.5
    checkpoint_every: int = 0
    keep_checkpoints: int = 0
    log_every: int = 1
    max_failures: int = 0
    # Test hook: rank `fail_rank` exits hard after this optimizer step on a fresh start (0 = never).
    fail_at_step: int = 0
    fail_rank: int = 0
    progress: bool = True

    def validate(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.micro_batch_size < 1 or self.global_batch_size < 1:
            raise ValueError("global_batch_size and micro_batch_size must be >= 1")
        per_step = self.micro_batch_size * self.workers
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be a multiple of "
                f"micro_batch_size x workers = {self.micro_batch_size} x {self.workers}"
            )
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_tokens < 64:
            raise ValueError(f"max_tokens must be >= 64, got {self.max_tokens}")
        if not 0.0 <= self.description_prob <= 1.0:
            raise ValueError(f"description_prob must be within [0, 1], got {self.description_prob}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be within [0, 1], got {self.min_lr_ratio}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
