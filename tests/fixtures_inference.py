"""Fixtures for the generation / registry / labeling / infer tests: a tiny AffectGPT checkpoint.

Import the fixtures you use into a test module (``from tests.fixtures_inference import ...``).
The checkpoint is an untrained tiny AffectGPT (tiny Qwen2, 768-d CLIP faces, 64-d tiny HuBERT):
what these tests check (plumbing, batching, determinism, the registry) needs no training.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core box, OpenMP spinning across 2 threads is ~40x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build_checkpoint(llm_path: Path, out: Path, seed: int = 0) -> Path:
    from training.model import build_model

    model = build_model("tiny", llm_path=llm_path, visual_dim=768, audio_dim=64, seed=seed)
    return Path(model.save_trainable(out))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_models, tmp_path_factory) -> Path:
    """A trainable-weights checkpoint folder of an untrained tiny AffectGPT."""
    return build_checkpoint(Path(tiny_models["llm"]), tmp_path_factory.mktemp("ckpt") / "step_00000001")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The checkpoint loaded (eval mode, CPU, fp32)."""
    from inference.model_io import load_model

    model, _ = load_model(str(tiny_checkpoint), device="cpu")
    return model
