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
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from core.config import dump_yaml, flatten
from core.console import echo
from core.errors import InputError, TrainingError
from core.paths import require_writable
from core.runtime import init_ray
from core.tracking import require_tracking, short_retries, tracking_uri, unreachable
from modeling.checkpoint import FAILURE_FILE

RUN_NAME = "train"


@dataclass
class TrainResult:
    """What a finished run leaves: the last checkpoint folder and its metrics."""

    checkpoint_dir: str | None
    metrics: dict
    history: list[dict] = field(default_factory=list)
    out: str = ""
    mlflow_run_id: str | None = None
    # "on"; "off" (--no-track: local metrics only); "lost" (the server stopped answering mid-run)
    tracking: str = "on"
    register_later: str = ""  # the command that uploads the run and registers its model, when not done here


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
    """Per-step metrics into the driver's MLflow run, never on the step's path.

    A step only puts its metrics in a bounded buffer; a thread sends them, each call with one try
    and a short timeout. The first failure stops sending for the rest of the run (one warning in
    the worker's log): metrics.jsonl stays complete, and `affectflow register RUN_DIR` uploads it later.
    """

    BUFFER = 10_000  # steps; when full (a slow server), the newest metrics wait in metrics.jsonl only

    def __init__(self, uri: str, run_id: str, timeout_s: float = 5.0):
        import os
        import queue

        from mlflow.tracking import MlflowClient

        # This worker process makes no other MLflow calls: one try, a short timeout.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(timeout_s)))
        self.client, self.run_id, self.down = MlflowClient(uri), run_id, threading.Event()
        self.queue: queue.Queue = queue.Queue(maxsize=self.BUFFER)
        self.thread = threading.Thread(target=self._send, name="mlflow-metrics", daemon=True)
        self.thread.start()

    def __call__(self, metrics: dict, step: int) -> None:
        if self.down.is_set():
            return
        try:
            self.queue.put_nowait((dict(metrics), step, int(time.time() * 1000)))
        except Exception:  # noqa: BLE001 - a full buffer drops this step's upload, never the step
            pass

    def _send(self) -> None:
        from mlflow.entities import Metric

        while True:
            item = self.queue.get()
            if item is None or self.down.is_set():
                return
            metrics, step, now = item
            try:
                self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                            for k, v in metrics.items() if v is not None])
            except Exception as exc:  # noqa: BLE001 - an outage: stop sending, the run goes on
                self.down.set()
                print(f"[train] MLflow stopped answering ({type(exc).__name__}); metrics stay in metrics.jsonl")
                return

    def close(self, wait_s: float = 10.0) -> None:
        """Send what is buffered, waiting at most ``wait_s`` seconds."""
        try:
            self.queue.put_nowait(None)
        except Exception:  # noqa: BLE001 - full: the thread stops at the outage or sends on
            pass
        self.thread.join(timeout=wait_s)


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
        mlflow_log = (_RankZeroMlflow(config["mlflow_uri"], config["run_id"], cfg.mlflow.check_timeout_s)
                      if (rank == 0 and config["run_id"]) else None)
        if mlflow_log is not None:
            stack.callback(mlflow_log.close)
        hooks = LoopHooks(
            report=report,
            log_metrics=mlflow_log,
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
    track: bool = True,
) -> TrainResult:
    """Train AffectGPT on cached features; see the module docstring for the run folder.

    ``features`` (tests, benches) replaces the store: a map-style dataset of feature items
    or a zero-arg picklable callable returning one. ``resume`` continues the run in ``out``
    from its latest checkpoint (same worker count and ZeRO stage). Joins or starts Ray (`init_ray`).
    ``progress(step, total, loss=...)`` is called on the driver as rank 0 steps (with
    ``train.progress``; e.g. `core.console.Bar.set`).

    Tracking is never on a step's path: an HTTP tracking server is checked once before any work
    (``TrackingError`` naming it when it does not answer within ``mlflow.check_timeout_s``), rank 0
    sends metrics from a buffer, and a server lost mid-run leaves ``tracking="lost"`` and the
    ``register_later`` command (``on_finish`` is then skipped). ``track=False``: no MLflow at all.
    A run stopped for non-finite values raises ``TrainingError`` and marks the MLflow run FAILED.
    """
    import mlflow
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from modeling.model import resolve_llm_path

    tc = cfg.train
    out = Path(out or Path(cfg.paths.runs) / "train").resolve()
    require_writable(out, "--out", folder=True)
    run_dir = out / "ray" / RUN_NAME
    if run_dir.exists() and not resume:
        raise InputError(f"{out} already holds a training run: pass --resume to continue it, or choose a new --out")
    if resume and not run_dir.exists():
        raise InputError(f"nothing to resume in {out}: no run at {run_dir}")
    if resume:  # before Ray starts or anything loads: a run folder on shared storage may hold a planted pickle
        from training.loop import check_resume_files

        check_resume_files(run_dir)
    llm_path = resolve_llm_path(cfg.model, models or cfg.paths.models).resolve()
    features_fn = _features_factory(store, corpus, cfg.model.visual_stream, features)
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    timeout = cfg.mlflow.check_timeout_s
    if track:  # before anything is written, Ray starts or a worker loads
        require_tracking(uri, timeout, hint="; start it, point --mlflow-uri at one, or pass --no-track to train "
                                            "with local metrics only")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")

    init_ray(cfg)
    per_worker = _cpus_per_worker(tc.cpus_per_worker, tc.workers)
    local = not cfg.ray.address

    later = shlex.join(["affectflow", "register", str(out), "--mlflow-uri", uri, "--name", cfg.mlflow.registered_model,
                        "--alias", cfg.mlflow.alias])
    run = None
    status, tracking, ckpt_dir, metrics = "FAILED", "on" if track else "off", None, {}
    (out / FAILURE_FILE).unlink(missing_ok=True)  # a failure record is this run's only
    try:
        if track:
            mlflow.set_tracking_uri(uri)
            with short_retries():
                mlflow.set_experiment(cfg.mlflow.experiment)
                run = mlflow.start_run(run_name=f"train-{out.name}")
                mlflow.log_params({k: str(v)[:500] for k, v in flatten(cfg).items()})
                mlflow.log_params({"data.store": str(store), "data.corpus": str(corpus),
                                   "data.llm_path": str(llm_path), "run.out": str(out), "run.resume": resume})
                mlflow.log_text(dump_yaml(cfg), "config.yaml")
        with _progress_feed(progress if tc.progress else None) as feed:
            trainer = TorchTrainer(
                _worker,
                train_loop_config={
                    "cfg": cfg, "features": features_fn, "llm_path": str(llm_path), "threads": max(1.0, per_worker),
                    "mlflow_uri": uri, "run_id": run.info.run_id if run else None,
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
            try:
                result = trainer.fit()
            except Exception as exc:
                stopped = _training_error(exc, out)
                if stopped is not None:
                    raise stopped from None
                raise
        ckpt_dir = result.checkpoint.path if result.checkpoint is not None else None
        metrics = dict(result.metrics or {})
        status = "FINISHED"
        if run is not None and unreachable(uri, timeout):
            tracking = "lost"
            echo(f"[train] the MLflow server {uri} stopped answering during the run: the checkpoints and "
                 f"metrics.jsonl in {out} are complete; to upload the run and register its model later, run:\n"
                 f"    {later}")
        elif run is not None:
            with short_retries():
                if ckpt_dir:
                    mlflow.log_param("checkpoint_dir", ckpt_dir)
                if on_finish is not None and ckpt_dir:
                    on_finish(ckpt_dir, cfg)
    finally:
        if run is not None:
            _end_run(status, timeout)
    return TrainResult(checkpoint_dir=ckpt_dir, metrics=metrics, history=_read_history(out / "metrics.jsonl"),
                       out=str(out), mlflow_run_id=run.info.run_id if run else None, tracking=tracking,
                       register_later=later if tracking != "on" else "")


def _training_error(exc: BaseException, out: Path) -> TrainingError | None:
    """The run's own stop (non-finite values), from the run folder's record or the worker's exception."""
    failed = out / FAILURE_FILE
    if failed.is_file():
        return TrainingError(json.loads(failed.read_text(encoding="utf-8"))["message"])
    seen = set()
    while exc is not None and id(exc) not in seen:  # Ray wraps the worker's error (RayTaskError(TrainingError))
        seen.add(id(exc))
        if isinstance(exc, TrainingError):
            text = str(exc)
            return TrainingError(next((x.strip() for x in text.splitlines() if "training stopped at" in x), text))
        exc = exc.__cause__ or exc.__context__
    return None


def _end_run(status: str, timeout: float) -> None:
    """End the active MLflow run with ``status``: one try, a short timeout (a lost server only warns)."""
    import mlflow

    with short_retries(max_retries=0, timeout_s=max(1, int(timeout))):
        try:
            mlflow.end_run(status)
        except Exception:  # noqa: BLE001 - the run is already off the stack; the server may be gone
            pass
