"""Ray Train + DeepSpeed on the CPU: ZeRO 2/3 equal a single process, ZeRO-3 checkpoints are
complete, a killed worker resumes to the same weights, the CLI resumes a run, MLflow gets metrics.

All runs share one small store (16 samples, 4 optimizer steps of 4 samples, LoRA dropout on)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.config import load_config
from training.data import SyntheticFeatures, load_features, write_synthetic_store
from training.loop import LoopHooks, run_loop, single_process
from training.trainer import train

STEPS = 4


def config(tmp: Path, *extra: str):
    return load_config(None, [
        "train.global_batch_size=4", "train.micro_batch_size=1", "train.lr=1e-3", "train.workers=2",
        "train.checkpoint_every=2", "train.max_tokens=256", "train.progress=false",
        f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", *extra,
    ])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    write_synthetic_store(SyntheticFeatures(16, 768, 64, seed=1), str(root / "store.zarr"), str(root / "corpus"))
    return root


def _train(data, tiny_models, out: Path, *extra: str, on_finish=None):
    return train(config(data, *extra), data / "store.zarr", data / "corpus", out,
                 models=Path(tiny_models["llm"]).parent, on_finish=on_finish)


FINISHED: list[tuple] = []


def record_finish(checkpoint_dir: str, cfg) -> None:
    """The hook model logging plugs into: runs inside the still-open MLflow run."""
    import mlflow

    FINISHED.append((checkpoint_dir, cfg.train.zero_stage, mlflow.active_run().info.run_id))


@pytest.fixture(scope="module")
def single(data, tiny_models, tmp_path_factory):
    """The reference: one plain process (no Ray), same data, same global batch."""
    cfg = config(data, "train.workers=1")
    root = tmp_path_factory.mktemp("single")
    with single_process():
        return run_loop(cfg, load_features(str(data / "store.zarr"), str(data / "corpus")), tiny_models["llm"],
                        LoopHooks(checkpoint_root=str(root)))


@pytest.fixture(scope="module")
def zero2(ray_session, data, tiny_models, tmp_path_factory):
    return _train(data, tiny_models, tmp_path_factory.mktemp("z2") / "run", "train.zero_stage=2",
                  on_finish=record_finish)


@pytest.fixture(scope="module")
def zero3(ray_session, data, tiny_models, tmp_path_factory):
    return _train(data, tiny_models, tmp_path_factory.mktemp("z3") / "run", "train.zero_stage=3")


@pytest.fixture(scope="module")
def killed(ray_session, data, tiny_models, tmp_path_factory):
    """Rank 1 dies after step 3 (the last checkpoint is step 2); Ray restarts the group from it."""
    return _train(data, tiny_models, tmp_path_factory.mktemp("killed") / "run", "train.zero_stage=2",
                  "train.fail_at_step=3", "train.fail_rank=1", "train.max_failures=1")


def weights(ckpt: str) -> dict[str, torch.Tensor]:
    ckpt = Path(ckpt)
    adapter = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    fusion = load_file(str(ckpt / "fusion.safetensors"))
    return {**{f"adapter.{k}": v for k, v in adapter.items()}, **{f"fusion.{k}": v for k, v in fusion.items()}}


def losses(history) -> list[float]:
    return [h["loss"] for h in history]


def test_two_workers_zero2_and_zero3_follow_the_single_process_curve(single, zero2, zero3):
    assert len(single.history) == STEPS
    ref = losses(single.history)
    assert ref[-1] < ref[0]
    for run in (zero2, zero3):
        assert [h["step"] for h in run.history] == list(range(1, STEPS + 1))
        assert losses(run.history) == pytest.approx(ref, rel=1e-4)
        assert run.metrics["step"] == STEPS and run.metrics["tokens_per_s"] > 0
    assert {"lr", "samples_per_s", "tokens_per_s"} <= set(zero2.history[0])


def test_zero3_checkpoint_is_complete_and_equals_zero2(single, zero2, zero3):
    w2, w3, w1 = weights(zero2.checkpoint_dir), weights(zero3.checkpoint_dir), weights(single.last_checkpoint)
    assert w3.keys() == w2.keys() == w1.keys()
    assert sum(k.startswith("adapter.") for k in w3) == 2 * 7 * 2  # lora A and B on 7 modules x 2 layers
    assert all(t.numel() > 0 for t in w3.values())
    for k in w2:
        torch.testing.assert_close(w3[k], w2[k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)
    assert Path(zero2.checkpoint_dir).name == f"step_{STEPS:08d}"
    ds = Path(zero2.checkpoint_dir) / "deepspeed" / "state"
    assert sorted(p.name for p in ds.glob("zero_pp_rank_*_optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]


def test_killed_worker_resumes_to_the_same_weights(zero2, killed):
    raw = (Path(killed.out) / "metrics.jsonl").read_text().splitlines()
    assert len(raw) > STEPS  # steps after the step-2 checkpoint ran twice: the worker did die
    assert losses(killed.history) == pytest.approx(losses(zero2.history), rel=1e-6)
    w, ref = weights(killed.checkpoint_dir), weights(zero2.checkpoint_dir)
    for k in ref:
        torch.testing.assert_close(w[k], ref[k], rtol=0, atol=1e-6)


def test_metrics_and_params_go_to_mlflow(data, zero2):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{data}/mlflow.db")
    history = client.get_metric_history(zero2.mlflow_run_id, "loss")
    assert [m.step for m in history] == list(range(1, STEPS + 1))
    assert [m.value for m in history] == pytest.approx(losses(zero2.history))
    run = client.get_run(zero2.mlflow_run_id)
    assert run.data.params["train.zero_stage"] == "2" and run.data.params["train.workers"] == "2"
    assert {"lr", "tokens_per_s", "samples_per_s"} <= set(run.data.metrics)
    assert FINISHED == [(zero2.checkpoint_dir, 2, zero2.mlflow_run_id)]


def test_cli_resume_continues_the_killed_run(data, tiny_models, killed, capsys):
    from affectflow.cli import main

    out = Path(killed.out)
    args = ["train", "--store", str(data / "store.zarr"), "--corpus", str(data / "corpus"), "--out", str(out),
            "--models", str(Path(tiny_models["llm"]).parent), "--workers", "2", "--zero", "2"]
    sets = [f"mlflow.tracking_uri=sqlite:///{data}/mlflow.db", "train.global_batch_size=4", "train.micro_batch_size=1",
            "train.lr=1e-3", "train.checkpoint_every=2", "train.max_tokens=256", "train.progress=false"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 2  # the run exists: --resume is required
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume"] + [x for s in sets + ["train.epochs=2"] for x in ("--set", s)]) == 0
    final = Path(capsys.readouterr().out.split("final checkpoint: ")[1].split()[0])
    assert final.name == f"step_{2 * STEPS:08d}"
    from training.loop import read_state

    assert read_state(final)["step"] == 2 * STEPS
