"""The training loop: DeepSpeed engine, optimizer, schedule, steps, checkpoints. No Ray here.

:func:`run_loop` is what every data-parallel worker runs; ``training.trainer`` calls it
inside a Ray Train worker and passes callbacks for reporting, and tests/benches call it in
a plain process (:func:`init_single_process`). The process group must exist before the
call (Ray Train creates it; :func:`init_single_process` does otherwise).

Determinism: the sample order is a pure function of (seed, epoch, world size), the task draw
of (seed, epoch, index), and the torch RNG (LoRA dropout) is re-seeded from (seed, step,
rank, micro-step) before every micro-step, so a run resumed from a checkpoint replays the
same computation as the uninterrupted one without saving any RNG state.

The checkpoint layout is :mod:`modeling.checkpoint`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.errors import ConfigError, MissingFileError, TrainingError
from modeling.checkpoint import DS_DIR, DS_TAG, FAILURE_FILE, STATE_FILE
from training.data import Collator, PromptDataset, epoch_order

_DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class LoopHooks:
    """What the caller plugs in; every field is optional."""

    # report(metrics, checkpoint_dir or None): called by every rank at each checkpoint and epoch end, never
    # per step (Ray Train's report waits on the driver: ~2 s a call). Per-step metrics go to log_metrics.
    report: Callable[[dict, str | None], None] | None = None
    # log_metrics(metrics, step): rank 0 only (MLflow).
    log_metrics: Callable[[dict, int], None] | None = None
    # progress(total, initial) -> object with update(n) / set_postfix(dict) / close(); rank 0 only.
    progress: Callable[[int, int], object] | None = None
    # Where a rank writes the checkpoint folders it then reports.
    checkpoint_root: str | None = None
    # A checkpoint folder to resume from (None: start fresh).
    resume_from: str | None = None
    # rank 0 appends one JSON line per step here (the run folder, on a cluster too).
    metrics_path: str | None = None
    # Where the checkpoints written under checkpoint_root end up once reported (the run folder); errors
    # name them there. None: where they are written.
    checkpoint_home: str | None = None


@dataclass
class LoopResult:
    step: int
    epoch: int
    history: list[dict] = field(default_factory=list)
    last_checkpoint: str | None = None
    resumed_from_step: int = 0


def _first_failure(hooks: "LoopHooks", rank: int) -> bool:
    """The test hook kills a rank once per run: under load Ray may restart the group before it
    registered the last checkpoint, and a second kill on that fresh start would exhaust the retries."""
    if not hooks.metrics_path:
        return True
    marker = Path(hooks.metrics_path).with_name(f".killed-rank{rank}")
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_single_process(backend: str = "gloo") -> None:
    """A one-rank process group (gloo) for running the loop outside Ray."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(_free_port()))
    dist.init_process_group(backend, rank=0, world_size=1)


@contextmanager
def single_process(backend: str = "gloo"):
    """:func:`init_single_process` for a block; the group is destroyed and the env restored after."""
    saved = {k: os.environ.get(k) for k in _DIST_ENV}
    init_single_process(backend)
    try:
        yield
    finally:
        shutdown_distributed()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def shutdown_distributed(barrier: bool = True) -> None:
    """Destroy the process group; without it rank 0 aborts at exit.

    ``barrier=False`` after a failure: a peer may already be gone.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            if barrier:
                dist.barrier()
        finally:
            ds_comm = sys.modules.get("deepspeed.comm.comm")
            if ds_comm is not None and ds_comm.cdb is not None:
                # Through DeepSpeed, which also drops its cached groups: a later run in this
                # process (tests, benches) would otherwise reuse dead ones.
                ds_comm.destroy_process_group()
            else:
                dist.destroy_process_group()


def _skip_cpu_shm_comm() -> None:
    """Keep DeepSpeed on plain gloo on the CPU: its shared-memory comm op is JIT-compiled
    (~30 s on a fresh machine) and buys nothing at our sizes."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases, norms and other 1-D parameters (as released)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        ndim = len(getattr(p, "ds_shape", p.shape))
        if ndim < 2 or name.endswith(".bias") or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine to ``min_ratio`` at ``total``; (0, _, 1.0) is constant 1."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if min_ratio >= 1.0 or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def deepspeed_config(train_cfg, world: int, use_gpu: bool) -> dict:
    """The DeepSpeed config: ZeRO stage, batch split, bf16 on GPU / fp32 on CPU, torch optimizer."""
    accum = train_cfg.global_batch_size // (train_cfg.micro_batch_size * world)
    cfg = {
        "train_batch_size": train_cfg.global_batch_size,
        "train_micro_batch_size_per_gpu": train_cfg.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "zero_optimization": {"stage": train_cfg.zero_stage},
        # A torch AdamW: DeepSpeed's own Adam compiles a fused op (~40 s) on first use.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bool(use_gpu)},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train_cfg.grad_clip > 0:
        cfg["gradient_clipping"] = train_cfg.grad_clip
    if train_cfg.zero_stage == 3:
        # Small trainable tensors stay whole so the tiny model does not drown in gathers.
        cfg["zero_optimization"].update({"stage3_param_persistence_threshold": 0})
    return cfg


def steps_plan(n_samples: int, train_cfg, world: int) -> tuple[int, int, int]:
    """(micro-steps per optimizer step, optimizer steps per epoch, total steps)."""
    accum = train_cfg.global_batch_size // (train_cfg.micro_batch_size * world)
    per_rank = (n_samples - n_samples % world) // world
    natural = per_rank // (train_cfg.micro_batch_size * accum)
    per_epoch = train_cfg.steps_per_epoch or natural
    if per_epoch < 1:
        raise ConfigError(
            f"{n_samples} samples are fewer than one global batch of {train_cfg.global_batch_size}: "
            "lower train.global_batch_size"
        )
    return accum, per_epoch, per_epoch * train_cfg.epochs


def rank_order(n: int, seed: int, epoch: int, rank: int, world: int, needed: int) -> list[int]:
    """This rank's indices for ``epoch``; extra permutations are appended when an epoch is set
    longer than one pass (``train.steps_per_epoch``)."""
    order: list[int] = []
    j = 0
    while len(order) < needed:
        order += (epoch_order(n, seed, epoch * 100_003 + j, rank, world) if j
                  else epoch_order(n, seed, epoch, rank, world))
        j += 1
    return order[:needed]


def _micro_seed(seed: int, step: int, position: int) -> int:
    # position = micro * world + rank: with micro-batches of one sample this is the sample's
    # place in the global batch, so dropout masks do not depend on the worker count.
    return (seed * 1_000_003 + step * 10_007 + position) % (2**63 - 1)


def gather_trainable(engine, model, zero_stage: int) -> dict[str, torch.Tensor]:
    """Full CPU copies of the trainable weights; under ZeRO-3 each is gathered first (else empty)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if zero_stage == 3:
        import deepspeed

        out = {}
        for n, p in params:  # one at a time: never the whole model on one rank
            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                out[n] = p.detach().to("cpu", dtype=torch.float32, copy=True)
        return out
    return {n: p.detach().to("cpu", dtype=torch.float32, copy=True) for n, p in params}


def save_checkpoint(engine, model, folder: Path, state: dict, zero_stage: int, rank: int) -> Path:
    """Every rank writes its DeepSpeed shard; rank 0 also the trainable weights and the state."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = gather_trainable(engine, model, zero_stage)
    if rank == 0:
        model.save_trainable(folder, state_dict=weights)
    engine.save_checkpoint(str(folder / DS_DIR), tag=DS_TAG, client_state={"affectflow": state},
                           exclude_frozen_parameters=True)
    if rank == 0:
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    return folder


# What DeepSpeed's resume state may hold besides tensors and plain data: its ZeRO stage enum,
# loss scaler and fragment addresses (found by torch.serialization.get_unsafe_globals_in_checkpoint
# on ZeRO-2/3 checkpoints). Anything else in these pickles could only be a payload: a planted
# `mp_rank_00_model_states.pt` ran os.system when loaded with weights_only=False, as DeepSpeed does.
RESUME_GLOBALS = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def resume_globals() -> list:
    """The classes of :data:`RESUME_GLOBALS`, for ``torch.serialization.safe_globals``."""
    import importlib

    return [getattr(importlib.import_module(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1])
            for name in RESUME_GLOBALS]


def check_resume_files(folder: str | Path) -> None:
    """Refuse a run or checkpoint folder whose DeepSpeed state names anything outside
    :data:`RESUME_GLOBALS`, before anything is loaded or started (``TrainingError`` naming the file).

    Reads only each file's pickle opcodes (``get_unsafe_globals_in_checkpoint``): nothing is built.
    Run folders may sit on shared storage that others can write.
    """
    for path in sorted(Path(folder).rglob("*.pt")):
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as exc:  # noqa: BLE001 - not a zip checkpoint, truncated, garbled
            raise TrainingError(f"refused to resume from {path}: not a torch checkpoint this run wrote "
                                f"({type(exc).__name__}: {str(exc)[:200]})") from None
        unknown = [n for n in names if n not in RESUME_GLOBALS]
        if unknown:
            raise TrainingError(f"refused to resume from {path}: it names {', '.join(unknown[:3])}, which a "
                                "training checkpoint never holds (a planted pickle?); nothing was loaded")


def weights_only_engine(config):
    """A DeepSpeed checkpoint engine that saves as DeepSpeed does but loads with ``weights_only=True``
    (tensors, plain data and :data:`RESUME_GLOBALS` only): a payload in the file raises instead of running."""
    import pickle

    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            try:
                with torch.serialization.safe_globals(resume_globals()):
                    return torch.load(path, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError as exc:
                raise TrainingError(f"refused to resume from {path}: {str(exc).splitlines()[0][:300]}") from None

    return WeightsOnlyCheckpointEngine(config)


def read_state(folder: str | Path) -> dict:
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise MissingFileError(f"{folder} is not a training checkpoint: {STATE_FILE} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def json_metrics(metrics: dict) -> str:
    """One strict-JSON line: a non-finite value becomes null and its key is listed under ``nonfinite``."""
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    clean = {k: (None if k in bad else v) for k, v in metrics.items()}
    if bad:
        clean["nonfinite"] = bad
    return json.dumps(clean, allow_nan=False)


def nonfinite(metrics: dict) -> str:
    """``"loss=nan"`` for the first non-finite loss or gradient norm of a step, else ``""``."""
    for key in ("loss", "grad_norm"):
        value = metrics.get(key)
        if value is not None and not math.isfinite(value):
            return f"{key}={value}"
    return ""


def nonfinite_weight(model: torch.nn.Module, zero_stage: int) -> str:
    """The name of the first trainable tensor holding a non-finite value on any rank ("" when none).

    Collective: every rank checks what it holds (its ZeRO-3 partition, else the whole tensor) and
    the flags are all-reduced, so every rank gets the same answer.
    """
    import torch.distributed as dist

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    bad = torch.zeros(len(named), dtype=torch.float32)
    for i, (_, p) in enumerate(named):
        held = p.ds_tensor if zero_stage == 3 and hasattr(p, "ds_tensor") else p
        bad[i] = float(held.numel() > 0 and not bool(torch.isfinite(held.detach()).all()))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    found = bad.nonzero()
    return named[int(found[0])][0] if len(found) else ""


def checked_loss(engine, batch: dict, world: int) -> float:
    """The loss of ``batch`` under the current weights, dropout off and no gradient (every rank, the
    mean over ranks): a checkpoint is written only when its weights give a finite loss on real data."""
    engine.eval()
    try:
        with torch.no_grad():
            value = torch.tensor([float(engine(**batch).loss.detach().float())], dtype=torch.float64)
    finally:
        engine.train()
    if world > 1:
        torch.distributed.all_reduce(value)
    return float(value[0]) / world


def run_loop(cfg, features, llm_path: str | Path, hooks: LoopHooks | None = None, *, use_gpu: bool = False,
             build_model: Callable | None = None) -> LoopResult:
    """Train on ``features`` (a map-style dataset of feature items) from ``cfg`` (a full Config).

    Returns on every rank; rank 0's ``history`` holds the per-step metrics.
    """
    import deepspeed

    from modeling.model import build_from_config

    hooks = hooks or LoopHooks()
    tc = cfg.train
    if not use_gpu:
        _skip_cpu_shm_comm()
    rank, world = dist_info()
    device = torch.device(f"cuda:{torch.cuda.current_device()}") if use_gpu else torch.device("cpu")

    first = features[0]
    visual_dim, audio_dim = int(first["visual"].shape[-1]), int(first["audio"].shape[-1])
    if build_model is not None:
        model = build_model(visual_dim, audio_dim)
    else:
        model = build_from_config(cfg.model, llm_path, visual_dim, audio_dim, seed=cfg.seed,
                                  dtype=torch.bfloat16 if use_gpu else torch.float32)
    model.to(device)
    model.train()
    tok = model.tokenizer
    data = PromptDataset(features, tok, seed=cfg.seed, visual=cfg.model.visual_stream, max_tokens=tc.max_tokens,
                         description_prob=tc.description_prob)
    collate = Collator(pad_id=tok.eos_token_id)
    accum, per_epoch, total = steps_plan(len(data), tc, world)

    optimizer = torch.optim.AdamW(optimizer_groups(model, tc.weight_decay), lr=tc.lr, betas=tuple(tc.betas),
                                  eps=1e-8)

    def scheduler(opt):
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, tc.warmup_steps, total, tc.min_lr_ratio))

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(tc, world, use_gpu), dist_init_required=False)

    step, resumed_from = 0, 0
    if hooks.resume_from:
        state = read_state(hooks.resume_from)
        if state.get("world") != world or state.get("zero_stage") != tc.zero_stage:
            raise ConfigError(
                f"checkpoint {hooks.resume_from} was written by {state.get('world')} workers at ZeRO "
                f"{state.get('zero_stage')}; resuming needs the same (got {world}, {tc.zero_stage})")
        check_resume_files(Path(hooks.resume_from) / DS_DIR)
        # DeepSpeed's own engine loads with weights_only=False; this one refuses any code in the files.
        engine.checkpoint_engine = weights_only_engine(engine._config)
        engine.load_checkpoint(str(Path(hooks.resume_from) / DS_DIR), tag=DS_TAG, load_module_strict=False,
                               load_optimizer_states=True, load_lr_scheduler_states=True)
        step = resumed_from = int(state["step"])

    history: list[dict] = []
    bad_run = 0  # consecutive steps with a non-finite loss or gradient norm (their updates skipped)
    bar = hooks.progress(total, step) if (hooks.progress and rank == 0) else None
    if hooks.metrics_path and rank == 0:
        Path(hooks.metrics_path).parent.mkdir(parents=True, exist_ok=True)
    metrics_file = open(hooks.metrics_path, "a", encoding="utf-8") if (hooks.metrics_path and rank == 0) else None

    def home(folder: Path) -> str:
        """Where ``folder`` is kept once reported (the run folder), so a message names a path that exists."""
        return str(Path(hooks.checkpoint_home) / folder.name) if hooks.checkpoint_home else str(folder)

    last_ckpt = home(Path(hooks.resume_from)) if hooks.resume_from else None  # the last one known good

    def stop(why: str, reason: str, message: str) -> TrainingError:
        """The run's failure: recorded beside metrics.jsonl (rank 0), returned to be raised on every rank."""
        if rank == 0 and hooks.metrics_path:
            Path(hooks.metrics_path).with_name(FAILURE_FILE).write_text(json.dumps(
                {"status": "failed", "reason": reason, "step": step, "value": why, "message": message,
                 "last_checkpoint": last_ckpt}, indent=2) + "\n", encoding="utf-8")
        return TrainingError(message)

    def checkpoint(metrics: dict, batch: dict) -> str | None:
        """Write a checkpoint of weights that are finite and give a finite loss on ``batch`` (the step's
        last micro-batch); weights that do not stop the run: no later step can mend them (each of their
        updates is skipped), and a checkpoint of them would be registered as good."""
        nonlocal last_ckpt
        if not hooks.checkpoint_root:
            return None
        bad = nonfinite_weight(model, tc.zero_stage)
        loss = float("nan") if bad else checked_loss(engine, batch, world)
        if bad or not math.isfinite(loss):
            what = f"weight {bad} is not finite" if bad else f"the weights give loss={loss} on a training batch"
            raise stop(f"weight={bad}" if bad else f"checked_loss={loss}", "non-finite-weights",
                       f"training stopped at step {step}: {what} (no checkpoint written; last good "
                       f"checkpoint: {last_ckpt or 'none'}); lower train.lr, or set train.grad_clip")
        state = {"step": step, "epoch": step // per_epoch, "world": world, "zero_stage": tc.zero_stage,
                 "steps_per_epoch": per_epoch, "total_steps": total, "metrics": metrics}
        folder = Path(hooks.checkpoint_root) / f"step_{step:08d}"
        save_checkpoint(engine, model, folder, state, tc.zero_stage, rank)
        last_ckpt = home(folder)
        return str(folder)

    try:
        while step < total:
            epoch = step // per_epoch
            data.set_epoch(epoch)
            per_step = tc.micro_batch_size * accum
            order = rank_order(len(data), cfg.seed, epoch, rank, world, per_epoch * per_step)
            done = step - epoch * per_epoch
            loader = torch.utils.data.DataLoader(data, batch_size=tc.micro_batch_size, sampler=order[done * per_step:],
                                                 collate_fn=collate, drop_last=True, num_workers=0)
            it = iter(loader)
            while step < (epoch + 1) * per_epoch:
                t0 = time.perf_counter()
                lr = engine.get_lr()[0]
                loss_sum = torch.zeros(2, dtype=torch.float64)  # [sum of micro losses, tokens]
                for micro in range(accum):
                    batch = {k: v.to(device) for k, v in next(it).items()}
                    torch.manual_seed(_micro_seed(cfg.seed, step, micro * world + rank))
                    out = engine(**batch)
                    loss = out.loss
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        # A non-finite loss makes every gradient NaN (NaN * 0 is NaN too), so the update is
                        # skipped at the accumulation boundary on every rank: ZeRO's overflow check (the
                        # loss-scaling skip of AMP) drops a step whose global gradient norm is not finite.
                        loss = loss * float("nan")
                    engine.backward(loss)
                    engine.step()
                    loss_sum[0] += value
                    loss_sum[1] += float(batch["attention_mask"].sum())
                applied = engine.was_step_applied()
                step += 1
                if world > 1:
                    torch.distributed.all_reduce(loss_sum)
                dt = time.perf_counter() - t0
                metrics = {"loss": float(loss_sum[0]) / (accum * world), "lr": float(lr),
                           "tokens_per_s": float(loss_sum[1]) / dt, "samples_per_s": tc.global_batch_size / dt,
                           "epoch": step / per_epoch, "step": step, "time": time.time()}
                grad_norm = engine.get_global_grad_norm()  # global: the same on every rank (None: not computed)
                if grad_norm is not None:
                    metrics["grad_norm"] = float(grad_norm)
                # Every rank sees the same all-reduced loss and global norm, so all stop together.
                why = nonfinite(metrics) or ("" if applied else "update=skipped")
                if not applied:
                    metrics["skipped"] = 1
                bad_run = bad_run + 1 if why else 0
                if rank == 0:
                    history.append(metrics)
                    if metrics_file:
                        metrics_file.write(json_metrics(metrics) + "\n")
                        metrics_file.flush()
                    if hooks.log_metrics and (step % tc.log_every == 0 or step == total):
                        hooks.log_metrics({k: v for k, v in metrics.items() if k not in ("step", "time")}, step)
                    if bar is not None:
                        bar.update(1)
                        if hasattr(bar, "set_postfix"):
                            bar.set_postfix({"loss": f"{metrics['loss']:.4f}"})
                if bad_run >= tc.max_bad_steps:
                    raise stop(why, "non-finite", (
                        f"training stopped at step {step}: {why} for {bad_run} consecutive step(s), each update "
                        f"skipped (train.max_bad_steps={tc.max_bad_steps}); last good checkpoint: "
                        f"{last_ckpt or 'none'}"))
                at_epoch_end = step % per_epoch == 0
                at_every = tc.checkpoint_every and step % tc.checkpoint_every == 0
                # A skipped step changed no weight: the checkpoint of the step before (if any) stands.
                ckpt = checkpoint(metrics, batch) if (at_epoch_end or at_every) and not why else None
                if hooks.report and (ckpt or at_epoch_end or step == total):
                    hooks.report(metrics, ckpt)
                if (tc.fail_at_step and step == tc.fail_at_step and not resumed_from and rank == tc.fail_rank
                        and _first_failure(hooks, rank)):
                    os._exit(1)  # test hook: a killed worker
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()
        if metrics_file:
            metrics_file.close()
    return LoopResult(step=step, epoch=step // per_epoch, history=history, last_checkpoint=last_ckpt,
                      resumed_from_step=resumed_from)
