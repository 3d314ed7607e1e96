"""Ray Train + DeepSpeed on the CPU: ZeRO 2/3 equal a single process, ZeRO-3 checkpoints are
complete, a killed worker resumes to the same weights, the CLI resumes a run, MLflow gets metrics,
and the labels come from the store (or, for a store written without them, from --corpus).

Those runs share one small store (16 samples, 4 optimizer steps of 4 samples, LoRA dropout on),
written without labels, so each run takes them from the corpus CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.config import load_config
from core.errors import StoreError
from features.labels import LABEL_FILES, read_corpus_labels
from synth.features import SyntheticFeatures, write_synthetic_store
from training.data import load_features, store_labels
from training.loop import LoopHooks, run_loop, single_process
from training.trainer import TrainRequest, train

pytestmark = pytest.mark.slow  # end-to-end jobs: `make test-slow` (CI runs both tiers)

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
    write_synthetic_store(SyntheticFeatures(16, 768, 64, seed=1), str(root / "store.zarr"), str(root / "corpus"),
                          labels_in_store=False)
    return root


def _train(data, tiny_models, out: Path, *extra: str, on_finish=None):
    return train(TrainRequest(config(data, *extra), data / "store.zarr", data / "corpus", out,
                              models=Path(tiny_models["llm"]).parent), on_finish=on_finish)


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


# ---- labels: from the store, or from --corpus ------------------------------------------------

TRACK2, TRACK3 = LABEL_FILES["mercaptionplus"]
LABELLED = [f"sample_{i:08d}" for i in range(6)]


@pytest.fixture(scope="module")
def preprocessed(ray_session, synth_corpus, models_dir, tmp_path_factory):
    """Six corpus samples preprocessed for real: the last has no label rows, the fifth is labelled
    with an empty list (neutral), and the first has a second track-2 row (the first row wins)."""
    import pandas as pd

    from pipelines.job import PreprocessRequest, preprocess
    from tests.fixtures.pipeline import copy_corpus, pipeline_config

    root = copy_corpus(synth_corpus, tmp_path_factory.mktemp("labelled") / "corpus", LABELLED)
    t2, t3 = pd.read_csv(root / TRACK2), pd.read_csv(root / TRACK3)
    t2.loc[t2["name"] == LABELLED[4], "openset"] = "[]"
    t2 = pd.concat([t2, pd.DataFrame({"name": [LABELLED[0]], "openset": ["[angry, furious]"]})])
    t2[t2["name"] != LABELLED[5]].to_csv(root / TRACK2, index=False)
    t3[t3["name"] != LABELLED[5]].to_csv(root / TRACK3, index=False)
    store = root.parent / "store.zarr"
    summary = preprocess(PreprocessRequest(root, store, pipeline_config(), models=models_dir))
    assert summary.ok == len(LABELLED), summary.format()
    return root, store


def test_training_reads_the_labels_preprocessing_stored(preprocessed):
    root, store = preprocessed
    csv = read_corpus_labels(root)
    want = {
        n: (o or [], r) for n, o, r in zip(csv["name"], csv["openset"], csv["reason"]) if o is not None or r is not None
    }
    assert sorted(want) == LABELLED[:5] and want[LABELLED[4]][0] == [] and "angry" not in want[LABELLED[0]][0]
    for corpus in (None, str(root)):  # the stored labels, then the corpus CSVs: the same
        data = load_features(str(store), corpus)
        assert {n: (data.openset[i], data.reason[i]) for i, n in enumerate(data.names)} == want


def test_train_with_store_only(preprocessed, tiny_models, tmp_path, capsys):
    from affectflow.cli import main

    _, store = preprocessed
    sets = [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "train.global_batch_size=2",
            "train.micro_batch_size=1", "train.steps_per_epoch=2", "train.max_tokens=256", "train.progress=false"]
    args = [
        "train",
        "--store",
        str(store),
        "--out",
        str(tmp_path / "run"),
        "--models",
        str(Path(tiny_models["llm"]).parent),
        "--workers",
        "1",
        "--no-register",
    ]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    final = Path(capsys.readouterr().out.split("final checkpoint: ")[1].split()[0])
    assert final.name == f"step_{2:08d}"


def test_a_store_without_labels_needs_the_corpus(data, tiny_models, tmp_path, capsys):
    """The runs above train on this store with --corpus; without it the CLI refuses, saying what to pass."""
    from affectflow.cli import main

    args = ["train", "--store", str(data / "store.zarr"), "--out", str(tmp_path / "run"),
            "--models", str(Path(tiny_models["llm"]).parent), "--no-register",
            "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds no labels" in err and "pass --corpus ROOT" in err and "re-running preprocess skips" in err
    assert not (tmp_path / "run").exists()  # refused before any run folder or worker


def test_a_store_partly_without_labels_needs_the_corpus(tmp_path):
    store, corpus = str(tmp_path / "store.zarr"), str(tmp_path / "corpus")
    write_synthetic_store(SyntheticFeatures(4, 8, 4, seed=2), store, corpus, labels_in_store=False)
    # The first two again, with labels (their label CSVs go elsewhere: the corpus keeps all four).
    write_synthetic_store(SyntheticFeatures(2, 8, 4, seed=3), store, str(tmp_path / "corpus2"))
    with pytest.raises(
        StoreError, match=r"2 samples of feature store .* without labels \(e.g. 'synth_00002'.*--corpus ROOT"
    ):
        store_labels(store)
    assert len(load_features(store, corpus)) == 4
