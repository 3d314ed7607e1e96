"""Training throughput: features from the store vs online decode + encode from raw media.

The released code decodes the video, the face stack and the audio in its DataLoader workers
(``num_workers: 4`` in its train configs, runner_base.py:282) and runs CLIP and HuBERT inside every
training step. We read cached features instead. Both variants run the same tiny model, the same
loop (``training.loop.run_loop``, one process, DeepSpeed ZeRO-2, fp32 on the CPU, torch on every
core in the training process) on the same synthetic corpus and sample order; only where the
features come from differs:

- store: the feature store is opened and read (``load_features``) inside the timed run, so its
  read cost is paid where a training run pays it;
- online: decode in ``--workers`` DataLoader worker processes, prefetching ``--prefetch`` samples
  each in the loop's sample order (what the release's loader does), CLIP + HuBERT (fp32) in the
  training process per sample, as the release's forward runs them.

Each line states what it includes: "end to end" is data set-up (store read / worker start and
encoder loads) + model build + DeepSpeed set-up + every step, the same on both sides apart from
the data; "per step" is the median samples/s over the steps after the first (warm-up), both sides.

    .venv/bin/python bench/train.py [--n 24] [--steps 8] [--batch 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _as_is(sample):
    return sample  # a DecodedSample crosses from the worker as it is (no tensor collation)


class _Decoded(torch.utils.data.Dataset):
    """Manifest rows -> `DecodedSample` (frames, faces, audio clips): the part a DataLoader worker does."""

    def __init__(self, rows: list[dict]):
        from pipelines.stages import DecodeStage

        self.rows = rows
        self.decode = DecodeStage()  # OpenFace faces, as the release

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.decode.decode(self.rows[i])


class OnlineFeatures(torch.utils.data.Dataset):
    """The store dataset's items, with visual/audio recomputed from the raw media: decoded by worker
    processes ahead of the loop (in ``order``), encoded here when the loop asks for the item."""

    def __init__(self, stored, corpus: Path, models: Path, order: list[int], workers: int, prefetch: int):
        from pipelines.encoders import ClipEncoder, HubertEncoder
        from pipelines.manifest import read_manifest

        self.stored = stored
        rows = {r.name: r.to_dict() for r in read_manifest(corpus, "mer2025")}
        self.decoded = _Decoded([rows[n] for n in stored.names])
        self.clip = ClipEncoder(models / "clip", device="cpu", dtype="float32", torch_threads=torch.get_num_threads())
        self.hubert = HubertEncoder(models / "hubert", device="cpu", dtype="float32")
        self.order = list(order)
        loader = torch.utils.data.DataLoader(self.decoded, batch_size=None, sampler=list(order), num_workers=workers,
                                             prefetch_factor=prefetch if workers else None, collate_fn=_as_is)
        self.ahead = iter(loader)  # workers start now and decode ahead of the loop

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, i: int) -> dict:
        from pipelines.stages import stack_samples

        if self.order and self.order[0] == i:
            self.order.pop(0)
            sample = next(self.ahead)
        else:  # an item outside the loop's order (run_loop reads item 0 for the feature sizes)
            sample = self.decoded[i]
        batch = self.hubert(self.clip(stack_samples([sample])))
        item = dict(self.stored[i])
        item["visual"] = torch.from_numpy(batch["face"][0])
        item["audio"] = torch.from_numpy(batch["audio"][0])
        return item


def loop_order(cfg, n: int) -> list[int]:
    """The sample indices ``run_loop`` asks for in one single-process epoch, in order."""
    from training.loop import rank_order, steps_plan

    accum, per_epoch, _ = steps_plan(n, cfg.train, 1)
    return rank_order(n, cfg.seed, 0, 0, 1, per_epoch * cfg.train.micro_batch_size * accum)


def timed_run(cfg, make_features, llm: Path) -> tuple[float, float, float]:
    """(end-to-end seconds, data set-up seconds, median per-step samples/s after the first step)."""
    from training.loop import LoopHooks, run_loop, single_process

    t0 = time.perf_counter()
    features = make_features()
    setup = time.perf_counter() - t0
    with single_process():
        result = run_loop(cfg, features, llm, LoopHooks())
    total = time.perf_counter() - t0
    return total, setup, statistics.median(h["samples_per_s"] for h in result.history[1:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="synthetic corpus size")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per variant")
    ap.add_argument("--batch", type=int, default=4, help="global = micro batch")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="online side: DataLoader decode workers (default: the core count)")
    ap.add_argument("--prefetch", type=int, default=2, help="online side: samples each worker decodes ahead")
    ap.add_argument("--rounds", type=int, default=2, help="alternating measurement rounds")
    ap.add_argument("--work", help="working folder (default: a temp dir)")
    args = ap.parse_args(argv)

    import ray

    from core.config import load_config
    from pipelines.job import PreprocessRequest, preprocess
    from synth.corpus import write_corpus
    from synth.tiny_models import build_tiny_models
    from training.data import load_features

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-train-"))
    models = work / "models"
    paths = build_tiny_models(models)
    corpus = work / "corpus"
    write_corpus(corpus, n=args.n, seed=0)
    t0 = time.perf_counter()
    preprocess(PreprocessRequest(corpus, work / "store.zarr", models=models))
    print(f"preprocessed {args.n} samples into the store in {time.perf_counter() - t0:.1f}s (paid once, not "
          f"counted below)")
    ray.shutdown()  # free the CPUs for the timed part

    store = str(work / "store.zarr")
    cfg = load_config(None, [f"train.global_batch_size={args.batch}", f"train.micro_batch_size={args.batch}",
                             f"train.steps_per_epoch={args.steps}", "train.epochs=1", "train.max_tokens=256"])
    n = len(load_features(store, None))
    order = loop_order(cfg, n)

    def from_store():
        return load_features(store, None)

    def online():
        return OnlineFeatures(load_features(store, None), corpus, models, order, args.workers, args.prefetch)

    print(f"tiny model, batch {args.batch}, {args.steps} steps ({len(order)} samples), fp32, training process torch "
          f"threads {torch.get_num_threads()}; online: {args.workers} decode workers x prefetch {args.prefetch}, "
          f"encoders in the training process; best of {args.rounds} alternating rounds (the CPUs are shared):")
    variants = {"from the feature store": from_store, "online decode + encode": online}
    runs: dict[str, list] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for label, make in variants.items():
            runs[label].append(timed_run(cfg, make, paths["llm"]))
    # The fastest end-to-end run of each side, and the best per-step rate of each side.
    best = {k: (*min(r)[:2], max(s for *_, s in r)) for k, r in runs.items()}
    print(f"  {'':<26} {'end to end s':>13} {'of it data set-up s':>20} {'samples/s':>10} {'per step samples/s':>19}")
    for label, (total, setup, step) in best.items():
        print(f"  {label:<26} {total:>13.2f} {setup:>20.2f} {len(order) / total:>10.2f} {step:>19.2f}")
    (s_total, _, s_step), (o_total, _, o_step) = best["from the feature store"], best["online decode + encode"]
    print(f"speed-up of the store: {o_total / s_total:.1f}x end to end (incl. set-up and model build, same on both "
          f"sides but the data), {s_step / o_step:.1f}x per step after the first (target >= 10x)")
    print(f"per sample: store step {1000 / s_step:.1f} ms, online step {1000 / o_step:.1f} ms; at these (tiny) "
          f"shapes the step itself bounds the speed-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
