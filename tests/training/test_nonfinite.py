"""Non-finite steps and weights: a step whose loss or gradients are not finite changes no weight and
counts toward train.max_bad_steps; weights that are not finite, or give a non-finite loss, are never
written as a checkpoint; the failure names the last good checkpoint where it is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.config import load_config
from core.errors import TrainingError
from modeling.checkpoint import FAILURE_FILE
from synth.features import SyntheticFeatures, write_synthetic_store
from training.loop import LoopHooks, json_metrics, run_loop, single_process

SETTINGS = ["train.global_batch_size=2", "train.micro_batch_size=2", "train.max_tokens=256", "train.progress=false"]


def test_metrics_lines_are_strict_json():
    line = json_metrics({"loss": float("nan"), "lr": 1e-3, "grad_norm": float("inf"), "step": 3})
    assert json.loads(line) == {"loss": None, "lr": 1e-3, "grad_norm": None, "step": 3,
                                "nonfinite": ["loss", "grad_norm"]}
    assert "NaN" not in line and "Infinity" not in line


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    from training.data import load_features

    root = tmp_path_factory.mktemp("nonfinite")
    write_synthetic_store(SyntheticFeatures(8, 768, 64, seed=1), str(root / "store.zarr"), str(root / "corpus"))
    return load_features(str(root / "store.zarr"), None)


def _run(cfg, features, llm, run: Path, build=None):
    hooks = LoopHooks(checkpoint_root=str(run / "scratch"), checkpoint_home=str(run / "kept"),
                      metrics_path=str(run / "metrics.jsonl"))
    with single_process():
        return run_loop(cfg, features, llm, hooks, build_model=build)


def test_a_non_finite_step_changes_no_weight(tiny_models, features, tmp_path, one_thread):
    """The training forward of step 2 is poisoned with inf: its update is skipped (the weights after it are
    the step-1 checkpoint's, bit for bit), it is recorded as skipped, and the run goes on."""
    from modeling.model import build_from_config

    cfg = load_config(None, [*SETTINGS, "train.steps_per_epoch=2", "train.checkpoint_every=1",
                             "train.max_bad_steps=2", "train.lr=1e-2"])
    held = {}

    def build(visual_dim, audio_dim):
        model = build_from_config(cfg.model, tiny_models["llm"], visual_dim, audio_dim, seed=cfg.seed)
        forward, training = model.forward, {"n": 0}

        def inject(*args, **kwargs):
            out = forward(*args, **kwargs)
            if torch.is_grad_enabled():  # a training forward (the checkpoint check runs without gradients)
                training["n"] += 1
                if training["n"] == 2:
                    out.loss = out.loss * float("inf")
            return out

        model.forward = inject
        held["model"] = model
        return model

    result = _run(cfg, features, tiny_models["llm"], tmp_path, build)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and result.step == 2
    assert lines[1]["loss"] is None and lines[1]["nonfinite"][0] == "loss" and lines[1]["skipped"] == 1
    assert "skipped" not in lines[0] and lines[0]["loss"] > 0
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir()) == ["step_00000001"]  # none of step 2
    saved = load_file(str(tmp_path / "scratch" / "step_00000001" / "fusion.safetensors"))
    now = {n.removeprefix("fusion."): p.detach() for n, p in held["model"].named_parameters()
           if n.startswith("fusion.")}
    assert saved.keys() == now.keys()
    for name, value in saved.items():
        assert torch.equal(now[name], value), name  # the skipped update changed nothing


def test_weights_that_give_a_non_finite_loss_are_never_checkpointed(tiny_models, features, tmp_path, one_thread):
    """lr 1e30: the first update is finite (about 1e30 per weight) but the weights then give loss nan.
    The run stops at that step's checkpoint without writing it; the record says so."""
    cfg = load_config(None, [*SETTINGS, "train.steps_per_epoch=1", "train.lr=1e30"])
    with pytest.raises(TrainingError) as info:
        _run(cfg, features, tiny_models["llm"], tmp_path)
    assert ("training stopped at step 1: the weights give loss=nan on a training batch (no checkpoint written; "
            "last good checkpoint: none)") in str(info.value)
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())
    failed = json.loads((tmp_path / FAILURE_FILE).read_text())
    assert (failed["reason"], failed["step"], failed["last_checkpoint"]) == ("non-finite-weights", 1, None)


def test_bad_steps_stop_the_run_naming_the_kept_checkpoint(tiny_models, features, tmp_path, one_thread):
    """From the third training forward on the loss is inf: steps 3 and 4 are skipped and the run stops
    (max_bad_steps=2), naming step 2's checkpoint where it is kept, not the scratch folder."""
    from modeling.model import build_from_config

    cfg = load_config(None, [*SETTINGS, "train.epochs=4", "train.checkpoint_every=1", "train.max_bad_steps=2"])
    calls = {"n": 0}

    def build(visual_dim, audio_dim):
        model = build_from_config(cfg.model, tiny_models["llm"], visual_dim, audio_dim, seed=cfg.seed)
        forward = model.forward

        def inject(*args, **kwargs):
            out = forward(*args, **kwargs)
            if torch.is_grad_enabled():
                calls["n"] += 1
                if calls["n"] >= 3:
                    out.loss = out.loss * float("inf")
            return out

        model.forward = inject
        return model

    with pytest.raises(TrainingError) as info:
        _run(cfg, features, tiny_models["llm"], tmp_path, build)
    kept = tmp_path / "kept" / "step_00000002"
    assert (f"training stopped at step 4: loss=inf for 2 consecutive step(s), each update skipped "
            f"(train.max_bad_steps=2); last good checkpoint: {kept}") in str(info.value)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and [x.get("skipped") for x in lines] == [None, None, 1, 1]
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir()) == ["step_00000001", "step_00000002"]
    failed = json.loads((tmp_path / FAILURE_FILE).read_text())
    assert (failed["status"], failed["step"], failed["value"], failed["last_checkpoint"]) == (
        "failed", 4, "loss=inf", str(kept))
