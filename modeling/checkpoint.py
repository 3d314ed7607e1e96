"""The checkpoint layout: the one owner of its file names, and finding a checkpoint on disk.

One folder per checkpoint::

    adapter/                 peft save_pretrained (adapter_config.json, adapter_model.safetensors)
    fusion.safetensors       fusion + projectors (our names; modeling.model.RELEASED_NAMES maps them)
    affectflow_model.json    ModelSpec: preset, dims, placeholders, LoRA shape, base LLM path
    train_state.json         step, epoch, world size, ZeRO stage, last metrics
    deepspeed/state/...      DeepSpeed optimizer/scheduler state (per-rank ZeRO shards)

No torch at import: the registry and the CLI read these names without loading a model.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import ConfigError, ModelRefError

SPEC_FILE = "affectflow_model.json"
FUSION_FILE = "fusion.safetensors"
ADAPTER_DIR = "adapter"
STATE_FILE = "train_state.json"
FAILURE_FILE = "run_failed.json"  # in a run folder, beside metrics.jsonl: why and where a run stopped
DS_DIR = "deepspeed"
DS_TAG = "state"
# ModelSpec.source["format"] of weights imported from a released AffectGPT checkpoint_*.pth.
RELEASED_FORMAT = "affectgpt-released"
# Inference precisions (``label.dtype``); the torch names are accepted too.
DTYPES = ("auto", "fp32", "bf16", "fp16")
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# What a model needs to load (the DeepSpeed state is for resuming training only).
MODEL_FILES = (ADAPTER_DIR, FUSION_FILE, SPEC_FILE)
CHECKPOINT_FILES = (*MODEL_FILES, STATE_FILE)


def read_spec(checkpoint: str | Path) -> dict:
    """The model spec (``affectflow_model.json``) of a checkpoint folder, as a dict."""
    return json.loads((Path(checkpoint) / SPEC_FILE).read_text(encoding="utf-8"))


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder at ``path``: itself, or the latest (highest step) checkpoint under a run folder."""
    path = Path(path)
    if not path.exists():
        raise ModelRefError(f"model {path} does not exist (expected a checkpoint folder, a training run "
                            "folder or an MLflow URI such as models:/affectgpt@latest)")
    if (path / SPEC_FILE).is_file():
        return path
    found = [p.parent for p in path.rglob(SPEC_FILE)]
    if not found:
        raise ModelRefError(f"{path} holds no AffectFlow checkpoint: no {SPEC_FILE} in it or below it")

    def step(p: Path) -> tuple[int, str]:
        try:
            return int(json.loads((p / STATE_FILE).read_text(encoding="utf-8")).get("step", -1)), str(p)
        except (OSError, ValueError):
            return -1, str(p)

    return max(found, key=step)


def pick_dtype(dtype: str, spec: dict, device: str) -> str:
    """``fp32``, ``bf16`` or ``fp16``: ``dtype`` itself unless ``auto``, which is what the checkpoint records:
    on CUDA, fp16 for weights imported from the release (its LLM ran in fp16, the fusion under fp16
    autocast) and bf16 for ours; fp32 on the CPU (the release never ran there: its autocast is off on the CPU)."""
    dtype = DTYPE_ALIASES.get(dtype, dtype)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    if not str(device).startswith("cuda"):
        return "fp32"
    return "fp16" if (spec.get("source") or {}).get("format") == RELEASED_FORMAT else "bf16"
