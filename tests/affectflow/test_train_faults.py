"""Training faults end to end through the command line, each with a real part: a real `mlflow server` on
127.0.0.1 killed by PID mid-run and restarted on the same port and store, a run that diverges, relative
paths from another working directory, and a user error raised inside a Ray Train worker."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import _stop, kill_mlflow, start_mlflow

pytestmark = pytest.mark.slow  # end-to-end jobs: `make test-slow` (CI runs both tiers)

SETS = ["train.global_batch_size=2", "train.micro_batch_size=2", "train.max_tokens=256", "train.progress=false"]


def _sets(*extra: str) -> list[str]:
    return [x for s in [*SETS, *extra] for x in ("--set", s)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from synth.features import SyntheticFeatures, write_synthetic_store

    root = tmp_path_factory.mktemp("train-faults")
    write_synthetic_store(SyntheticFeatures(8, 768, 64, seed=1), str(root / "store.zarr"), str(root / "corpus"))
    return root / "store.zarr"


class Server:
    """A real `mlflow server` under one root that a test kills by PID and restarts on the same port."""

    def __init__(self, root: Path):
        self.root = root
        self.proc, self.log, self.uri = start_mlflow(root)
        self.port = int(self.uri.rsplit(":", 1)[1])

    def kill(self) -> None:
        kill_mlflow(self.proc, self.log)

    def restart(self) -> None:
        self.proc, self.log, _ = start_mlflow(self.root, self.port)

    def kill_at(self, metrics: Path, step: int, restart: bool) -> dict:
        """From a thread: kill the server once ``metrics`` holds ``step`` lines, then (``restart``) start it
        again at once; returns what happened (the steps written at the kill and when it answered again)."""
        seen: dict = {}

        def watch() -> None:
            while not (metrics.is_file() and metrics.read_text().count("\n") >= step):
                time.sleep(0.02)
            self.kill()
            seen["killed_at"] = metrics.read_text().count("\n")
            if restart:
                self.restart()
                seen["back_at"] = metrics.read_text().count("\n")

        seen["thread"] = threading.Thread(target=watch, daemon=True)
        seen["thread"].start()
        return seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            _stop(self.proc, self.log)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow-outage"))
    yield srv
    srv.stop()


def _runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri, uri)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_a_short_outage_loses_no_metric_point(server, store, tiny_models, tmp_path, capsys, ray_session):
    """The server is killed at step 5 of 40 and started again at once: rank 0 buffers the steps it cannot
    send and sends them when the server answers, so the one MLflow run ends FINISHED with all 40 points,
    and the model is registered in it."""
    from affectflow.cli import main

    out = tmp_path / "run"
    seen = server.kill_at(out / "metrics.jsonl", 5, restart=True)
    code = main(["train", "--store", str(store), "--models", str(tiny_models["llm"].parent), "--out", str(out),
                 "--mlflow-uri", server.uri,
                 *_sets("train.steps_per_epoch=40", "mlflow.experiment=short-outage", "mlflow.registered_model=short",
                        "mlflow.check_timeout_s=10")])
    seen["thread"].join(timeout=120)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert seen["killed_at"] >= 5 and "back_at" in seen, seen
    client, runs = _runs(server.uri, "short-outage")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [(r.info.run_id, r.info.status) for r in runs]
    run_id = runs[0].info.run_id
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == list(range(1, 41))
    assert json.loads((out / "mlflow_run.json").read_text())["run_id"] == run_id
    assert client.search_model_versions("name='short'")[0].run_id == run_id
    print(f"outage from step {seen['killed_at']} until step {seen['back_at']} of 40 (server restart time)")


def test_a_server_gone_for_the_rest_of_the_run(server, store, tiny_models, tmp_path, capsys, monkeypatch,
                                               ray_session):
    """Relative paths, run from another directory (a Ray worker runs elsewhere), on a Ray given by address
    as a cluster is, and the server killed at step 2 for the rest of the run: every step and checkpoint is
    written (metrics.jsonl too: it once was only for a local Ray), `train` prints how many steps the MLflow
    run lacks and the register command, and exits 1. Once the server is back, `affectflow register RUN_DIR`
    resumes that same run, sends what it lacks, ends it and registers the model in it."""
    import os

    import ray

    from affectflow.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(store.parent)
    models = os.path.relpath(tiny_models["llm"].parent, tmp_path)
    seen = server.kill_at(tmp_path / "a" / "metrics.jsonl", 2, restart=False)
    t0 = time.perf_counter()
    code = main(["train", "--store", "data/store.zarr", "--models", models, "--out", "a", "--mlflow-uri", server.uri,
                 *_sets("train.epochs=3", "train.checkpoint_every=2", "mlflow.experiment=gone",
                        "mlflow.registered_model=gone", "mlflow.check_timeout_s=2",
                        f"ray.address={ray.get_runtime_context().gcs_address}")])
    took = time.perf_counter() - t0
    seen["thread"].join(timeout=60)
    out = capsys.readouterr().out
    assert code == 1 and took < 240, (code, took)
    lacked = int(out.split("lacks the metrics of ")[1].split(" of 12 steps")[0])
    assert 12 - seen["killed_at"] <= lacked <= 12 and "is left open" in out
    assert f"affectflow register {tmp_path / 'a'} --mlflow-uri {server.uri}" in out
    steps = sorted(p.name for p in (tmp_path / "a" / "ray" / "train").glob("step_*"))
    assert steps == [f"step_{s:08d}" for s in (2, 4, 6, 8, 10, 12)], steps  # every checkpoint written
    assert [json.loads(x)["step"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()] == list(
        range(1, 13))

    server.restart()
    run_id = json.loads((tmp_path / "a" / "mlflow_run.json").read_text())["run_id"]
    client, runs = _runs(server.uri, "gone")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "RUNNING")]  # left open, not ended
    assert main(["register", "a", "--mlflow-uri", server.uri, "--name", "gone"]) == 0
    assert f"resumed MLflow run {run_id}" in capsys.readouterr().out
    client, runs = _runs(server.uri, "gone")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]  # one run, ended
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == list(range(1, 13))
    assert client.search_model_versions("name='gone'")[0].run_id == run_id


def test_a_diverging_one_step_run_exits_2_and_registers_nothing(store, tiny_models, tmp_path, capsys,
                                                                ray_session):
    """lr 1e30, one step: the update is finite (weights about 1e30) but the weights give loss nan. The
    checkpoint is refused before it is written, the run exits 2 naming the step, its MLflow run is FAILED,
    and nothing is registered (it used to exit 0 and register a model answering '!!!!')."""
    from mlflow.tracking import MlflowClient

    from affectflow.cli import main

    db = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "run"
    t0 = time.perf_counter()
    code = main(["train", "--store", str(store), "--models", str(tiny_models["llm"].parent), "--out", str(out),
                 "--mlflow-uri", db, *_sets("train.lr=1e30", "train.steps_per_epoch=1")])
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    assert ("error: training stopped at step 1: the weights give loss=nan on a training batch (no checkpoint "
            "written; last good checkpoint: none)") in err and "Traceback" not in err
    assert not list((out / "ray" / "train").glob("step_*"))
    client = MlflowClient(db, db)
    runs = client.search_runs([client.get_experiment_by_name("affectgpt").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not client.search_registered_models()
    print(f"clear error after {took:.1f}s")


def test_a_user_error_in_a_worker_is_an_error_line(store, tiny_models, tmp_path, capsys, ray_session):
    """The store holds face features only and the run asks for frames: the worker's StoreError reaches the
    console as `error: …` with exit 2, not as a traceback of Ray's wrappers."""
    from affectflow.cli import main

    code = main(["train", "--store", str(store), "--models", str(tiny_models["llm"].parent),
                 "--out", str(tmp_path / "run"), "--no-track", *_sets("model.visual_stream=frame")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "affectflow train: error: " in err and "'frame'" in err and "Traceback" not in err
