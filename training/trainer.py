"""The Ray Train driver: N data-parallel workers each running ``training.loop.run_loop``.

:func:`train` is the plain function behind ``affectflow train``: it resolves every path and the
base LLM on the driver, opens one MLflow run (params + resolved config here; per-step metrics from
rank 0's buffer, never on a step's path), runs a ``TorchTrainer`` (CPU + gloo, or GPU + nccl) whose
workers report to Ray Train only at checkpoints and epoch ends (a report waits on the driver), and
returns a :class:`TrainResult`. Model logging and registration are not done here: pass
``on_finish(checkpoint_dir, cfg)``, which is called inside the still-open MLflow run.

Run folder (``out``)::

    ray/train/step_XXXXXXXX/   the checkpoints Ray Train keeps (layout: training.loop)
    metrics.jsonl              per-step metrics from rank 0 (training.record, on a cluster too)
    mlflow_run.json            the MLflow run of this training run (``affectflow register`` resumes it)
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

from core.config import Config, dump_yaml, flatten, load_config
from core.console import echo
from core.errors import AffectFlowError, InputError, TrainingError, user_error
from core.paths import absolute, require_writable
from core.runtime import init_ray
from core.tracking import require_tracking, short_retries, tracking_uri, unreachable
from modeling.checkpoint import FAILURE_FILE
from training.record import (
    CONFIG_FILE,
    METRICS_FILE,
    mlflow_metrics,
    read_history,
    read_mlflow_run,
    read_unsent,
    recorded_on,
    upload_missing,
    write_mlflow_run,
    write_unsent,
)

RUN_NAME = "train"


@dataclass
class TrainResult:
    """What a finished run leaves: the last checkpoint folder and its metrics."""

    checkpoint_dir: str | None
    metrics: dict
    history: list[dict] = field(default_factory=list)
    out: str = ""
    mlflow_run_id: str | None = None
    # "on"; "off" (--no-track: local metrics only); "lost" (the server did not answer at the end of the run)
    tracking: str = "on"
    register_later: str = ""  # the command that uploads the run and registers its model, when not done here
    unsent: int = 0  # steps whose metrics the MLflow run lacks (tracking "lost")
    registered: object = None  # what ``on_finish`` returned (None: nothing registered)


def _features_factory(store, corpus, visual, features):
    """A picklable zero-arg callable giving the feature dataset inside each worker."""
    if features is not None:
        return features if callable(features) and not hasattr(features, "__getitem__") else _Const(features)
    if not store:
        raise InputError("no feature store given: pass --store PATH (written by `affectflow preprocess`)")
    if not Path(store).exists() and "://" not in str(store):
        raise InputError(f"feature store {store!r} does not exist")
    if corpus and not Path(corpus).exists() and "://" not in str(corpus):
        raise InputError(f"--corpus {corpus!r} does not exist")
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
    """Per-step metrics into the driver's MLflow run, never on the step's path, through outages.

    A step only appends its metrics to a bounded buffer (at most ``BUFFER`` steps; when full, the
    oldest step is dropped and counted, never silently); a thread sends them in batches, each call with
    one try and a short timeout. A failed call keeps the batch and tries again every ``RETRY_S``, so a
    server back after an outage gets every step buffered meanwhile. :meth:`close` waits a bounded time
    for the buffer to drain, then records in the run folder how many steps were not sent
    (``training.record.UNSENT_FILE``); metrics.jsonl holds them all, and the trainer or
    ``affectflow register RUN_DIR`` sends them once the server answers.
    """

    BUFFER = 50_000  # steps (~8 numbers each): tens of MB at most
    BATCH = 100  # steps per call: MLflow takes at most 1,000 metrics per log_batch
    RETRY_S = 2.0

    def __init__(self, uri: str, run_id: str, timeout_s: float = 5.0, folder: str | None = None):
        import os
        from collections import deque

        from mlflow.tracking import MlflowClient

        # This worker process makes no other MLflow calls: one try, a short timeout.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(timeout_s)))
        self.client, self.run_id, self.folder = MlflowClient(uri), run_id, folder
        self.items: deque = deque()  # (seq, step record)
        self.seq = self.dropped = 0
        self.outage_since: float | None = None
        self.deadline: float | None = None  # set by close
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._send, name="mlflow-metrics", daemon=True)
        self.thread.start()

    def __call__(self, metrics: dict, step: int) -> None:
        record = {**metrics, "step": step, "time": time.time()}
        with self.cond:
            if len(self.items) >= self.BUFFER:
                self.items.popleft()
                self.dropped += 1
            self.seq += 1
            self.items.append((self.seq, record))
            self.cond.notify()

    def _send(self) -> None:
        while True:
            with self.cond:
                while not self.items and self.deadline is None:
                    self.cond.wait()
                if not self.items:
                    return
                batch = [self.items[i] for i in range(min(self.BATCH, len(self.items)))]
            try:
                self.client.log_batch(self.run_id, metrics=[m for _, rec in batch for m in mlflow_metrics(rec)])
            except Exception as exc:  # noqa: BLE001 - an outage: keep the batch, try again later
                with self.cond:
                    if self.outage_since is None:
                        self.outage_since = time.monotonic()
                        print(f"[train] MLflow stopped answering ({type(exc).__name__}); buffering metrics, "
                              f"retrying every {self.RETRY_S:g}s (all steps stay in metrics.jsonl)")
                    if self.deadline is not None and time.monotonic() >= self.deadline:
                        return
                    self.cond.wait(self.RETRY_S)
                continue
            with self.cond:
                if self.outage_since is not None:
                    print(f"[train] MLflow answers again after {time.monotonic() - self.outage_since:.0f}s; "
                          "sending the buffered metrics")
                    self.outage_since = None
                while self.items and self.items[0][0] <= batch[-1][0]:  # the oldest may have been dropped meanwhile
                    self.items.popleft()

    def close(self, wait_s: float = 10.0) -> int:
        """Send what is buffered, trying for at most ``wait_s`` seconds; returns the steps left unsent."""
        with self.cond:
            self.deadline = time.monotonic() + wait_s
            self.cond.notify()
        self.thread.join(timeout=wait_s + 30)  # + one call's timeout
        with self.cond:
            unsent = len(self.items)
        if self.folder:
            write_unsent(self.folder, unsent, self.dropped)
        return unsent


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
        """At checkpoints and epoch ends only: each call waits on the driver (~2 s on a CPU run)."""
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
        mlflow_log = (_RankZeroMlflow(config["mlflow_uri"], config["run_id"], cfg.mlflow.check_timeout_s,
                                      config["out"]) if (rank == 0 and config["run_id"]) else None)
        if mlflow_log is not None:
            stack.callback(mlflow_log.close, max(10.0, 3 * cfg.mlflow.check_timeout_s))
        hooks = LoopHooks(
            report=report,
            log_metrics=mlflow_log,
            progress=partial(_QueueBar, config["progress"]) if (rank == 0 and config["progress"] is not None) else None,
            checkpoint_root=str(scratch),
            checkpoint_home=config["checkpoint_home"],
            resume_from=resume_dir,
            metrics_path=config["metrics_path"],
        )
        try:
            run_loop(cfg, features, config["llm_path"], hooks, use_gpu=cfg.train.use_gpu)
            ok = True
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            shutdown_distributed(barrier=ok)


def _cpus_per_worker(requested: float, workers: int) -> float:
    """Fit the workers into the cluster's CPUs (fractions are fine: on 2 cores 2 workers get 1 each)."""
    import ray

    total = float(ray.cluster_resources().get("CPU", requested * workers))
    return max(0.05, min(requested, total / workers))


@dataclass(frozen=True)
class TrainRequest:
    """One training run, as the command built it from the config and its flags.

    ``cfg`` gives the model, the loop (``train.*``), Ray and MLflow; the fields say what to read and
    where to write. Paths are made absolute by `train`, before Ray starts.
    """

    cfg: Config = field(default_factory=load_config)
    store: str | Path | None = None  # the feature store (a path or URL)
    corpus: str | Path | None = None  # a corpus root whose label CSVs supply or override the store's labels
    out: str | Path | None = None  # the run folder; None: <paths.runs>/train
    models: str | Path | None = None  # the folder holding qwen2/ for the tiny preset; None: paths.models
    resume: bool = False  # continue the run in ``out`` from its latest checkpoint and its MLflow run
    # Replaces the store (tests, benches, reviewed labels): a map-style dataset of feature items or a
    # zero-arg picklable callable returning one.
    features: object = None
    track: bool = True  # False: no MLflow at all


def train(request: TrainRequest, *, on_finish: Callable[[str, object], object] | None = None,
          progress: Callable[..., None] | None = None) -> TrainResult:
    """Train AffectGPT on cached features as ``request`` says; see the module docstring for the run folder.

    ``resume`` continues the run in ``out`` from its latest checkpoint (same worker count and ZeRO
    stage) and its MLflow run. Joins or starts Ray (`init_ray`). ``progress(step, total, loss=...)`` is
    called on the driver as rank 0 steps (with ``train.progress``; e.g. `core.console.Bar.set`). Every
    path is resolved here, before Ray starts.

    Tracking is never on a step's path: an HTTP tracking server is checked once before any work
    (``TrackingError`` naming it when it does not answer within ``mlflow.check_timeout_s``), rank 0
    sends metrics from a buffer that outlives an outage, and at the end the steps the MLflow run lacks
    are sent from metrics.jsonl. A server that does not answer then leaves ``tracking="lost"``, the
    count of steps not sent and the ``register_later`` command (``on_finish`` is then skipped; the run
    is ended by that command). ``track=False``: no MLflow at all. A user error in a worker is raised
    here as itself; a run stopped for non-finite values raises ``TrainingError``; either marks the
    MLflow run FAILED.
    """
    import mlflow
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from modeling.model import resolve_llm_path

    cfg, resume, features, track = request.cfg, request.resume, request.features, request.track
    tc = cfg.train
    out = Path(absolute(request.out or Path(cfg.paths.runs) / "train"))
    store, corpus = (str(p) if p is not None else None for p in (absolute(request.store), absolute(request.corpus)))
    require_writable(out, "--out", folder=True)
    run_dir = out / "ray" / RUN_NAME
    if run_dir.exists() and not resume:
        raise InputError(f"{out} already holds a training run: pass --resume to continue it, or choose a new --out")
    if resume and not run_dir.exists():
        raise InputError(f"nothing to resume in {out}: no run at {run_dir}")
    if resume:  # before Ray starts or anything loads: a run folder on shared storage may hold a planted pickle
        from training.loop import check_resume_files

        check_resume_files(run_dir)
    llm_path = resolve_llm_path(cfg.model, absolute(request.models or cfg.paths.models)).resolve()
    features_fn = _features_factory(store, corpus, cfg.model.visual_stream, features)
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    timeout = cfg.mlflow.check_timeout_s
    if track:  # before anything is written, Ray starts or a worker loads
        require_tracking(uri, timeout, hint="; start it, point --mlflow-uri at one, or pass --no-track to train "
                                            "with local metrics only")
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(dump_yaml(cfg), encoding="utf-8")

    init_ray(cfg)
    per_worker = _cpus_per_worker(tc.cpus_per_worker, tc.workers)

    later = shlex.join(["affectflow", "register", str(out), "--mlflow-uri", uri, "--name", cfg.mlflow.registered_model,
                        "--alias", cfg.mlflow.alias])
    run = None
    status, tracking, ckpt_dir, metrics, unsent, registered = "FAILED", "on" if track else "off", None, {}, 0, None
    (out / FAILURE_FILE).unlink(missing_ok=True)  # a failure record is this run's only
    try:
        if track:
            run = _open_run(cfg, uri, out, resume, {"data.store": str(store), "data.corpus": str(corpus),
                                                    "data.llm_path": str(llm_path), "run.out": str(out),
                                                    "run.resume": resume})
        with _progress_feed(progress if tc.progress else None) as feed:
            trainer = TorchTrainer(
                _worker,
                train_loop_config={
                    "cfg": cfg, "features": features_fn, "llm_path": str(llm_path), "threads": max(1.0, per_worker),
                    "mlflow_uri": uri, "run_id": run.info.run_id if run else None, "out": str(out),
                    "metrics_path": str(out / METRICS_FILE), "checkpoint_home": str(run_dir), "progress": feed,
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
        if run is not None:
            why = unreachable(uri, timeout)
            if not why:
                with short_retries():
                    sent, steps = upload_missing(mlflow.tracking.MlflowClient(uri), run.info.run_id, out)
                    if sent:
                        echo(f"[train] sent {sent} of {steps} steps' metrics that the MLflow run lacked "
                             "(kept in metrics.jsonl during an outage)")
                    if ckpt_dir:  # a tag: a resumed run moves it on
                        mlflow.set_tag("checkpoint_dir", ckpt_dir)
                    if on_finish is not None and ckpt_dir:
                        registered = on_finish(ckpt_dir, cfg)
            else:
                tracking, steps = "lost", len(read_history(out))
                counted = read_unsent(out)
                unsent = steps if counted is None else counted
                echo(f"[train] the MLflow server did not answer at the end of the run ({why}): MLflow run "
                     f"{run.info.run_id} lacks the metrics of {unsent} of {steps} steps and is left open; the "
                     f"checkpoints and metrics.jsonl in {out} are complete. To send the rest, end that run and "
                     f"register its model, run:\n    {later}")
        status = "FINISHED"
    finally:
        if run is not None:  # lost: one short try (off the active-run stack either way); register ends it later
            _end_run(status, timeout)
    return TrainResult(checkpoint_dir=ckpt_dir, metrics=metrics, history=read_history(out), out=str(out),
                       mlflow_run_id=run.info.run_id if run else None, tracking=tracking,
                       register_later=later if tracking != "on" else "", unsent=unsent, registered=registered)


def _open_run(cfg, uri: str, out: Path, resume: bool, data_params: dict):
    """Start this training run's MLflow run (``--resume``: continue the one recorded in ``out``) and log
    its params and config; its id is kept in ``out`` for ``affectflow register RUN_DIR``."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    recorded = read_mlflow_run(out) if resume else None
    with short_retries():
        own = None
        if recorded_on(recorded, uri):
            try:
                own = mlflow.tracking.MlflowClient(uri).get_run(recorded["run_id"])
            except Exception:  # noqa: BLE001 - deleted since: the resumed run gets a new MLflow run
                own = None
        if own is not None:  # in its own experiment, whatever mlflow.experiment says now
            mlflow.set_experiment(experiment_id=own.info.experiment_id)
            run = mlflow.start_run(run_id=own.info.run_id)
        else:
            mlflow.set_experiment(cfg.mlflow.experiment)
            run = mlflow.start_run(run_name=f"train-{out.name}")
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(cfg).items()})
            mlflow.log_params(data_params)
            mlflow.log_text(dump_yaml(cfg), "config.yaml")
    write_mlflow_run(out, run.info.run_id, uri, cfg.mlflow.experiment)
    return run


def _training_error(exc: BaseException, out: Path) -> AffectFlowError | None:
    """The run's own stop (non-finite values, from the run folder's record), or a user error raised in a
    worker (a bad store, a missing file), carried across Ray's wrappers as itself."""
    failed = out / FAILURE_FILE
    if failed.is_file():
        return TrainingError(json.loads(failed.read_text(encoding="utf-8"))["message"])
    return user_error(exc)


def _end_run(status: str, timeout: float) -> None:
    """End the active MLflow run with ``status``: one try, a short timeout (a lost server only warns)."""
    import mlflow

    with short_retries(max_retries=0, timeout_s=max(1, int(timeout))):
        try:
            mlflow.end_run(status)
        except Exception:  # noqa: BLE001 - the run is already off the stack; the server may be gone
            pass
