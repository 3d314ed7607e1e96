"""A run whose loss goes non-finite stops after train.max_bad_steps steps, with the step and value,
writes strict JSON metrics and no checkpoint of NaN weights."""

from __future__ import annotations

import json

import pytest

from core.config import load_config
from core.errors import TrainingError
from training.data import SyntheticFeatures, load_features, write_synthetic_store
from modeling.checkpoint import FAILURE_FILE
from training.loop import LoopHooks, json_metrics, run_loop, single_process


def test_metrics_lines_are_strict_json():
    line = json_metrics({"loss": float("nan"), "lr": 1e-3, "grad_norm": float("inf"), "step": 3})
    assert json.loads(line) == {"loss": None, "lr": 1e-3, "grad_norm": None, "step": 3,
                                "nonfinite": ["loss", "grad_norm"]}
    assert "NaN" not in line and "Infinity" not in line


def test_an_injected_inf_stops_the_run(tiny_models, tmp_path, one_thread):
    from modeling.model import build_from_config

    write_synthetic_store(SyntheticFeatures(8, 768, 64, seed=1), str(tmp_path / "store.zarr"), str(tmp_path / "corpus"))
    cfg = load_config(None, ["train.global_batch_size=2", "train.micro_batch_size=2", "train.epochs=4",
                             "train.checkpoint_every=1", "train.max_tokens=256", "train.progress=false",
                             "train.max_bad_steps=2"])
    calls = {"n": 0}

    def build(visual_dim, audio_dim):
        model = build_from_config(cfg.model, tiny_models["llm"], visual_dim, audio_dim, seed=cfg.seed)
        forward = model.forward

        def inject(*args, **kwargs):  # from the third step on, the loss is inf (and so are the gradients)
            out = forward(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] >= 3:
                out.loss = out.loss * float("inf")
            return out

        model.forward = inject
        return model

    run = tmp_path / "run"
    run.mkdir()
    hooks = LoopHooks(checkpoint_root=str(run / "checkpoints"), metrics_path=str(run / "metrics.jsonl"))
    with single_process(), pytest.raises(TrainingError) as info:
        run_loop(cfg, load_features(str(tmp_path / "store.zarr"), None), tiny_models["llm"], hooks, build_model=build)
    assert "training stopped at step 4: loss=inf for 2 consecutive step(s)" in str(info.value)
    assert "step_00000002" in str(info.value)  # the last good checkpoint
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and lines[2]["loss"] is None
    assert lines[2]["nonfinite"][0] == "loss" and "nonfinite" not in lines[1]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]
    failed = json.loads((run / FAILURE_FILE).read_text())
    assert (failed["status"], failed["step"], failed["value"]) == ("failed", 4, "loss=inf")
