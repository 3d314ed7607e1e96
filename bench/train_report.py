"""Training through Ray Train vs the same loop without it: what Ray Train's report costs a step.

Both sides run ``training.loop.run_loop`` on the same synthetic store, model, config and torch
threads (one, as a default worker gets); one side inside ``training.trainer.train`` (Ray Train, one
worker, ``--no-track``), the other in this process (``single_process``, no Ray). Ray is started
before either is timed.

1. Steady steps/s: from the step timestamps in each run's metrics.jsonl (first step to last), so
   start-up (Ray Train's worker group, model load) is outside both figures. Target: Ray Train >= 95 %.
2. Wall time of ``train()`` for the same steps with the default ``train.log_every=1`` and with
   ``train.log_every=40`` (start-up inside both, the same on both sides). Target: <= 1.25x. Also the
   steps' own time (first step to last, from metrics.jsonl), where Ray Train's per-step report used
   to wait: start-up (~30 s here) is noise on the wall figure.

    .venv/bin/python bench/train_report.py [--steps 40] [--rounds 2] [--set train.use_gpu=true ...]

At 7B shapes on a GPU: pass ``--set model.preset=qwen2.5-7b --set model.llm_path=DIR --set train.use_gpu=true``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def steady_rate(metrics: Path) -> tuple[float, float]:
    """(steps/s between the first and the last step's timestamps, those seconds) of a metrics.jsonl."""
    lines = [json.loads(x) for x in metrics.read_text(encoding="utf-8").splitlines() if x.strip()]
    first, last = lines[0], lines[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"]), last["time"] - first["time"]


def plain_loop(cfg, store: str, llm: Path, work: Path) -> tuple[float, float]:
    """The loop in this process: (steady steps/s, wall seconds)."""
    import torch

    from training.data import load_features
    from training.loop import LoopHooks, run_loop, single_process

    torch.set_num_threads(1)  # what a Ray Train worker with train.cpus_per_worker=1 sets
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    with single_process():
        run_loop(cfg, load_features(store, None), llm, LoopHooks(metrics_path=str(work / "metrics.jsonl")))
    wall = time.perf_counter() - t0
    return steady_rate(work / "metrics.jsonl")[0], wall


def ray_train(cfg, store: str, models: Path, out: Path) -> tuple[float, float, float]:
    """The loop through Ray Train (train(), --no-track): (steady steps/s, wall seconds, steps' seconds)."""
    from training.trainer import TrainRequest, train

    t0 = time.perf_counter()
    train(TrainRequest(cfg, store, None, out, models=models, track=False))
    wall = time.perf_counter() - t0
    rate, steps_s = steady_rate(out / "metrics.jsonl")
    return rate, wall, steps_s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is printed")
    ap.add_argument("--work", help="working folder (default: a temp dir)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for both sides (repeatable)")
    args = ap.parse_args(argv)

    import ray

    from core.config import load_config
    from core.runtime import init_ray
    from synth.features import SyntheticFeatures, write_synthetic_store
    from synth.tiny_models import build_tiny_models

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-train-report-"))
    models = work / "models"
    llm = build_tiny_models(models)["llm"]
    store = str(work / "store.zarr")
    write_synthetic_store(SyntheticFeatures(16, 768, 64, seed=0), store, str(work / "corpus"))
    base = ["train.global_batch_size=2", "train.micro_batch_size=2", f"train.steps_per_epoch={args.steps}",
            "train.max_tokens=256", "train.progress=false", *args.overrides]
    cfg = load_config(None, base)
    cfg40 = load_config(None, [*base, f"train.log_every={args.steps}"])
    init_ray(cfg)  # started once, outside every timing
    best = {"ray": (0.0, 1e9), "plain": (0.0, 1e9), "log1": (1e9, 1e9), "log40": (1e9, 1e9)}
    n = 0
    for r in range(args.rounds):
        for side in ("plain", "ray", "log40"):
            n += 1
            out = work / f"run{n}"
            if side == "plain":
                rate, wall = plain_loop(cfg, store, llm, out)
            else:
                rate, wall, steps_s = ray_train(cfg if side == "ray" else cfg40, store, models, out)
                key = "log1" if side == "ray" else "log40"
                best[key] = (min(best[key][0], wall), min(best[key][1], steps_s))
            if side in ("plain", "ray"):
                best[side] = (max(best[side][0], rate), min(best[side][1], wall))
    ray.shutdown()
    (ray_rate, ray_wall), (plain_rate, plain_wall) = best["ray"], best["plain"]
    print(f"tiny model, batch 2, {args.steps} steps, 1 worker, 1 torch thread each side, --no-track; "
          f"best of {args.rounds} alternating rounds (the CPUs are shared)")
    print(f"  {'':<34} {'steady steps/s':>15} {'wall s':>8}")
    print(f"  {'loop without Ray Train':<34} {plain_rate:>15.2f} {plain_wall:>8.1f}")
    print(f"  {'Ray Train, default settings':<34} {ray_rate:>15.2f} {ray_wall:>8.1f}")
    print(f"Ray Train / no Ray Train, steady steps/s: {100 * ray_rate / plain_rate:.1f} % (target >= 95 %)")
    (w1, s1), (w40, s40) = best["log1"], best["log40"]
    print(f"train() wall time, {args.steps} steps: log_every=1 {w1:.1f}s, log_every={args.steps} {w40:.1f}s: "
          f"{w1 / w40:.2f}x (target <= 1.25x; start-up in both)")
    print(f"the steps' own time (step 1 to {args.steps}): log_every=1 {s1:.2f}s, log_every={args.steps} {s40:.2f}s: "
          f"{s1 / s40:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
