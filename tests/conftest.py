"""Shared fixtures: repo paths, the emotion-wheel folder, tiny models and a synthetic corpus built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Keep test runs quiet and offline: nothing may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def wheel_dir() -> Path:
    """The emotion-wheel files: ../shared/emotion_wheel beside the checkout (as in CI)."""
    path = REPO.parent / "shared" / "emotion_wheel"
    if not (path / "format.csv").is_file():
        pytest.skip(f"emotion-wheel files not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random CLIP / HuBERT / Qwen2 checkpoints, built once per test session."""
    from affectflow.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("models"), seed=0)


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """A 24-sample MER2025-layout corpus (real mp4/wav/npy/CSV), written once per test session."""
    from affectflow.synth_corpus import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, n=24, seed=0)
    return root


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (starting Ray costs seconds; 2 CPUs as on CI)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
