"""The Ray Train driver: N data-parallel workers each running ``training.loop.run_loop``.

:func:`train` is the plain function behind ``affectflow train``: it resolves the base LLM
and the data, opens an MLflow run (params + resolved config here; per-step metrics from
rank 0), runs a ``TorchTrainer`` (CPU + gloo, or GPU + nccl) whose workers report every
checkpoint through ``ray.train.report``, and returns a :class:`TrainResult`. Model logging
and registration are not done here: pass ``on_finish(checkpoint_dir, cfg)``, which is
called inside the still-open MLflow run.

Run folder (``out``)::

    ray/train/step_XXXXXXXX/   the checkpoints Ray Train keeps (layout: training.loop)
    metrics.jsonl              per-step metrics from rank 0 (local runs)
    train_config.yaml          the resolved config
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from core.errors import InputError
from core.config import dump_yaml, flatten
from core.runtime import init_ray
from core.tracking import tracking_uri

RUN_NAME = "train"


@dataclass
class TrainResult:
    """What a finished run leaves: the last checkpoint folder and its metrics."""

    checkpoint_dir: str | None
    metrics: dict
    history: list[dict] = field(default_factory=list)
    out: str = ""
    mlflow_run_id: str | None = None


def _features_factory(store, corpus, visual, features):
    """A picklable zero-arg callable giving the feature dataset inside each worker."""
    if features is not None:
        return features if callable(features) and not hasattr(features, "__getitem__") else _Const(features)
    if not store:
        raise InputError("no feature store given: pass --store PATH (written by `affectflow preprocess`)")
    if not Path(store).exists() and "://" not in str(store):
        raise InputError(f"feature store {store!r} does not exist")
    # The labels are read here once so that a store without them, or a bad corpus root, is a
    # clear error before any worker starts; each worker reads them again with the features.
    if corpus:
        from features.labels import read_corpus_labels

        read_corpus_labels(str(corpus))
    else:
        from training.data import store_labels

        store_labels(str(store))
    return _StoreFeatures(str(store), str(corpus) if corpus else None, visual)


@dataclass
class _Const:
    value: object

    def __call__(self):
        return self.value


@dataclass
class _StoreFeatures:
    store: str
    corpus: str | None
    visual: str

    def __call__(self):
        from training.data import load_features

        return load_features(self.store, self.corpus, self.visual)


class _RankZeroMlflow:
    """Per-step metrics into the driver's MLflow run; a failing tracking server never stops training."""

    def __init__(self, uri: str, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client, self.run_id, self.warned = MlflowClient(uri), run_id, False

    def __call__(self, metrics: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        try:
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        except Exception as exc:  # noqa: BLE001 - logging is best effort
            if not self.warned:
                print(f"[train] MLflow metric logging failed, continuing without it: {exc}")
                self.warned = True


class _QueueBar:
    """The loop's progress protocol on rank 0: (step, total, postfix) go to the driver through a Ray
    queue, at most twice a second and once more on close; `train`'s ``progress`` draws them there.

    Not tqdm_ray: its bars are drawn by the driver's log forwarding (off unless --verbose), and one
    left open (a state arriving after its close re-creates it) is redrawn after every later line.
    """

    INTERVAL_S = 0.5

    def __init__(self, queue, total: int, initial: int):
        self.queue, self.total, self.step, self.postfix, self.sent = queue, total, initial, {}, 0.0

    def update(self, n: int) -> None:
        self.step += n  # sent with the loss: the loop calls set_postfix after each update

    def set_postfix(self, values: dict) -> None:
        self.postfix = dict(values)
        if time.monotonic() - self.sent >= self.INTERVAL_S:
            self._send()

    def close(self) -> None:
        self._send()

    def _send(self) -> None:
        self.sent = time.monotonic()
        try:
            self.queue.put_nowait((self.step, self.total, self.postfix))
        except Exception:  # noqa: BLE001 - a full or gone queue never stops training
            pass


@contextmanager
def _progress_feed(progress: Callable[..., None] | None):
    """The queue rank 0 reports to, and a driver thread calling ``progress(step, total, **postfix)``."""
    if progress is None:
        yield None
        return
    from ray.util.queue import Empty, Queue

    queue = Queue(maxsize=1000, actor_options={"num_cpus": 0})
    stop = threading.Event()

    def follow() -> None:
        while True:
            try:
                step, total, postfix = queue.get(timeout=0.5)
            except Empty:
                if stop.is_set():  # the workers are done and the queue is drained
                    return
                continue
            except Exception:  # noqa: BLE001 - the queue went away: the bar stops, training goes on
                return
            progress(step, total, **postfix)

    thread = threading.Thread(target=follow, name="train-progress", daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        stop.set()
        thread.join(timeout=10)
        queue.shutdown()


def _worker(config: dict) -> None:
    """One data-parallel rank inside Ray Train."""
    import ray.train
    import torch

    from training.loop import LoopHooks, run_loop, shutdown_distributed

    cfg = config["cfg"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(max(1, int(config["threads"])))
    if cfg.train.use_gpu:
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())  # Ray's choice for this rank (nccl group)
    features = config["features"]()
    scratch = Path(tempfile.mkdtemp(prefix=f"affectflow-ckpt-r{rank}-"))

    def report(metrics: dict, ckpt_dir: str | None) -> None:
        if ckpt_dir is None:
            ray.train.report(metrics)
            return
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir),
                         checkpoint_dir_name=Path(ckpt_dir).name)
        shutil.rmtree(ckpt_dir, ignore_errors=True)

    ok = False
    with ExitStack() as stack:
        resume = ray.train.get_checkpoint()
        resume_dir = stack.enter_context(resume.as_directory()) if resume is not None else None
        hooks = LoopHooks(
            report=report,
            log_metrics=_RankZeroMlflow(config["mlflow_uri"], config["run_id"]) if (rank == 0 and config["run_id"]) else None,
            progress=partial(_QueueBar, config["progress"]) if (rank == 0 and config["progress"] is not None) else None,
            checkpoint_root=str(scratch),
            resume_from=resume_dir,
            metrics_path=config["metrics_path"],
        )
        try:
            run_loop(cfg, features, config["llm_path"], hooks, use_gpu=cfg.train.use_gpu)
            ok = True
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            shutdown_distributed(barrier=ok)


def _read_history(path: Path) -> list[dict]:
    """Per-step metrics, the last record of each step (steps replayed after a restart win)."""
    if not path.is_file():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def _cpus_per_worker(requested: float, workers: int) -> float:
    """Fit the workers into the cluster's CPUs (fractions are fine: on 2 cores 2 workers get 1 each)."""
    import ray

    total = float(ray.cluster_resources().get("CPU", requested * workers))
    return max(0.05, min(requested, total / workers))


def train(
    cfg,
    store: str | Path | None = None,
    corpus: str | Path | None = None,
    out: str | Path | None = None,
    *,
    models: str | Path | None = None,
    resume: bool = False,
    features=None,
    on_finish: Callable[[str, object], None] | None = None,
    progress: Callable[..., None] | None = None,
) -> TrainResult:
    """Train AffectGPT on cached features; see the module docstring for the run folder.

    ``features`` (tests, benches) replaces the store: a map-style dataset of feature items
    or a zero-arg picklable callable returning one. ``resume`` continues the run in ``out``
    from its latest checkpoint (same worker count and ZeRO stage). Joins or starts Ray (`init_ray`).
    ``progress(step, total, loss=...)`` is called on the driver as rank 0 steps (with
    ``train.progress``; e.g. `core.console.Bar.set`).
    """
    import mlflow
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from training.model import resolve_llm_path

    tc = cfg.train
    out = Path(out or Path(cfg.paths.runs) / "train").resolve()
    run_dir = out / "ray" / RUN_NAME
    if run_dir.exists() and not resume:
        raise InputError(f"{out} already holds a training run: pass --resume to continue it, or choose a new --out")
    if resume and not run_dir.exists():
        raise InputError(f"nothing to resume in {out}: no run at {run_dir}")
    llm_path = resolve_llm_path(cfg.model, models or cfg.paths.models).resolve()
    features_fn = _features_factory(store, corpus, cfg.model.visual_stream, features)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")

    init_ray(cfg)
    per_worker = _cpus_per_worker(tc.cpus_per_worker, tc.workers)
    local = not cfg.ray.address

    uri = tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(cfg.mlflow.experiment)
    with _progress_feed(progress if tc.progress else None) as feed, \
            mlflow.start_run(run_name=f"train-{out.name}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(cfg).items()})
        mlflow.log_params({"data.store": str(store), "data.corpus": str(corpus), "data.llm_path": str(llm_path),
                           "run.out": str(out), "run.resume": resume})
        mlflow.log_text(dump_yaml(cfg), "config.yaml")
        trainer = TorchTrainer(
            _worker,
            train_loop_config={
                "cfg": cfg, "features": features_fn, "llm_path": str(llm_path), "threads": max(1.0, per_worker),
                "mlflow_uri": uri, "run_id": run.info.run_id,
                "metrics_path": str(out / "metrics.jsonl") if local else None, "progress": feed,
            },
            scaling_config=ScalingConfig(num_workers=tc.workers, use_gpu=tc.use_gpu,
                                         resources_per_worker={"CPU": per_worker}),
            run_config=RunConfig(
                name=RUN_NAME, storage_path=str(out / "ray"),
                failure_config=FailureConfig(max_failures=tc.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=tc.keep_checkpoints or None),
            ),
        )
        result = trainer.fit()
        ckpt_dir = result.checkpoint.path if result.checkpoint is not None else None
        metrics = dict(result.metrics or {})
        if ckpt_dir:
            mlflow.log_param("checkpoint_dir", ckpt_dir)
        if on_finish is not None and ckpt_dir:
            on_finish(ckpt_dir, cfg)
    return TrainResult(checkpoint_dir=ckpt_dir, metrics=metrics, history=_read_history(out / "metrics.jsonl"),
                       out=str(out), mlflow_run_id=run.info.run_id)
