"""Findings 3 and 12: the registered pyfunc model was a cloudpickle (a swapped ``python_model.pkl``
ran its payload on ``mlflow.pyfunc.load_model``), and the served model accepted any
``max_new_tokens`` and any number of rows. Now the model is logged from code (no pickle in its
folder: a planted one is never read), and a request past `SERVED_LIMITS` is refused before
anything is generated (the decode loop is replaced by one that fails the test if it is reached)."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException

from pipelines.stages import MAX_SUBTITLE_CHARS
from registry.pyfunc import SERVED_LIMITS
from registry.register import log_model
from tests.fixtures.inference import tiny_checkpoint  # noqa: F401 - the session fixture


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def logged(tiny_checkpoint, tmp_path_factory) -> Path:  # noqa: F811
    """The model as `affectflow train`/`register` log it, downloaded back as a serving host would."""
    root = tmp_path_factory.mktemp("served")
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    try:
        exp = mlflow.create_experiment("security", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = log_model(tiny_checkpoint)
        return Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "model")))
    finally:
        mlflow.set_tracking_uri(before)


def rows(n: int, subtitle: str = "hello") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"name": [f"s{i}" for i in range(n)], "task": ["ov"] * n, "subtitle": [subtitle] * n,
                         "visual": [rng.standard_normal((8, 768)).astype(np.float32) for _ in range(n)],
                         "audio": [rng.standard_normal((8, 64)).astype(np.float32) for _ in range(n)]})


def test_the_model_folder_holds_no_pickle_and_a_planted_one_never_runs(logged, tmp_path):
    flavor = yaml.safe_load((logged / "MLmodel").read_text())["flavors"]["python_function"]
    assert "model_code_path" in flavor and "python_model" not in flavor, flavor
    assert not list(logged.rglob("*.pkl")), list(logged.rglob("*.pkl"))
    import cloudpickle

    marker = tmp_path / "pwned"
    (logged / "python_model.pkl").write_bytes(cloudpickle.dumps(Payload(marker)))
    served = mlflow.pyfunc.load_model(str(logged))
    out = served.predict(rows(1), params={"max_new_tokens": 4})
    assert not marker.exists()
    assert list(out.columns) == ["text", "labels"] and len(out) == 1


@pytest.fixture(scope="module")
def served(logged):
    return mlflow.pyfunc.load_model(str(logged))


@pytest.fixture
def no_generation(monkeypatch):
    import modeling.generate

    calls: list = []

    def fake(model, visual, audio, subs, tasks, cfg, seeds, questions=None):
        calls.append(list(subs))
        return ["The character's emotional state is happy."] * len(subs)

    monkeypatch.setattr(modeling.generate, "generate", fake)
    return calls


@pytest.mark.parametrize("params,n,message", [
    ({"max_new_tokens": 10**9}, 1, "max_new_tokens: 1000000000 is over this model's limit of 1200"),
    ({"max_prompt_tokens": 10**7}, 1, "max_prompt_tokens: 10000000 is over this model's limit of 2000"),
    ({"cache_rows": 10**6}, 1, "cache_rows: 1000000 is over"),
    ({"cache_tokens": 10**8}, 1, "cache_tokens: 100000000 is over"),
    ({}, SERVED_LIMITS["rows"] + 1, "rows in one request: 65 is over this model's limit of 64"),
])
def test_requests_past_the_limits_are_refused_before_generating(served, no_generation, params, n, message):
    with pytest.raises(MlflowException, match=message) as info:
        served.predict(rows(n), params=params)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert no_generation == []


def test_a_20_mb_subtitle_is_cut_before_the_model_sees_it(served, no_generation):
    out = served.predict(rows(2, "so sad " * (3 * 2**20)), params={})
    assert len(out) == 2 and [len(s) for s in no_generation[0]] == [MAX_SUBTITLE_CHARS] * 2
