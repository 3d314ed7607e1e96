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
