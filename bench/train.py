"""Training throughput: features from the store vs online decode + encode from raw media.

The released code decodes the video, the face stack and the audio and runs CLIP and HuBERT
inside every training step. We read cached features instead. Both variants here run the same
tiny model, the same loop (``training.loop.run_loop``, one process, DeepSpeed ZeRO-2, fp32
CPU) on the same synthetic corpus; only where the features come from differs.

    .venv/bin/python bench/train.py [--n 24] [--steps 8] [--batch 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


import torch


class OnlineFeatures(torch.utils.data.Dataset):
    """The store dataset's items, but visual/audio recomputed from the raw media on every access."""

    def __init__(self, stored, corpus: Path, models: Path):
        from pipelines.encoders import ClipEncoder, HubertEncoder
        from pipelines.manifest import read_manifest
        from pipelines.stages import DecodeStage

        self.stored = stored
        rows = {r.name: r.to_dict() for r in read_manifest(corpus, "mer2025")}
        self.rows = [rows[n] for n in stored.names]
        self.decode = DecodeStage(faces="openface")
        self.clip = ClipEncoder(models / "clip", device="cpu", dtype="float32")
        self.hubert = HubertEncoder(models / "hubert", device="cpu", dtype="float32")

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, i: int) -> dict:
        from pipelines.stages import stack_samples

        batch = stack_samples([self.decode.decode(self.rows[i])])
        batch = self.hubert(self.clip(batch))
        item = dict(self.stored[i])
        item["visual"] = torch.from_numpy(batch["face"][0])
        item["audio"] = torch.from_numpy(batch["audio"][0])
        return item


def train_rate(cfg, features, llm: Path) -> float:
    """Median samples/s over the steps of one short run (the first step warms up)."""
    from training.loop import LoopHooks, run_loop, single_process

    with single_process():
        result = run_loop(cfg, features, llm, LoopHooks())
    return statistics.median(h["samples_per_s"] for h in result.history[1:])


def data_rate(features) -> float:
    """Samples/s of the data path alone: one pass producing every item."""
    t0 = time.perf_counter()
    for i in range(len(features)):
        features[i]
    return len(features) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="synthetic corpus size")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per variant")
    ap.add_argument("--batch", type=int, default=4, help="global = micro batch")
    ap.add_argument("--rounds", type=int, default=2, help="alternating measurement rounds")
    ap.add_argument("--work", help="working folder (default: a temp dir)")
    args = ap.parse_args(argv)

    from core.config import load_config
    from synth.corpus import write_corpus
    from synth.tiny_models import build_tiny_models
    from pipelines.job import preprocess
    from training.data import load_features

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-train-"))
    models = work / "models"
    paths = build_tiny_models(models)
    corpus = work / "corpus"
    write_corpus(corpus, n=args.n, seed=0)
    t0 = time.perf_counter()
    preprocess(corpus, work / "store.zarr", models=models, cfg=load_config())
    print(f"preprocessed {args.n} samples into the store in {time.perf_counter() - t0:.1f}s (paid once)")
    import ray

    ray.shutdown()  # free the CPUs for the timed part
    stored = load_features(str(work / "store.zarr"), str(corpus))
    online = OnlineFeatures(stored, corpus, models)

    cfg = load_config(None, [f"train.global_batch_size={args.batch}", f"train.micro_batch_size={args.batch}",
                             f"train.steps_per_epoch={args.steps}", "train.max_tokens=256"])
    print(f"tiny model, batch {args.batch}, {args.steps} steps, torch threads {torch.get_num_threads()}; "
          f"best of {args.rounds} alternating rounds (the CPUs are shared):")
    variants = {"from the feature store": stored, "online decode + encode": online}
    best = {k: {"train": 0.0, "data": 0.0} for k in variants}
    for _ in range(args.rounds):
        for label, feats in variants.items():
            best[label]["data"] = max(best[label]["data"], data_rate(feats))
            best[label]["train"] = max(best[label]["train"], train_rate(cfg, feats, paths["llm"]))
    print(f"  {'':<26} {'train samples/s':>16} {'data path samples/s':>20}")
    for label, r in best.items():
        print(f"  {label:<26} {r['train']:>16.2f} {r['data']:>20.1f}")
    store, live = best["from the feature store"], best["online decode + encode"]
    print(f"speed-up, training: {store['train'] / live['train']:.1f}x (target >= 10x); "
          f"data path alone: {store['data'] / live['data']:.0f}x")
    step_ms, media_ms = 1000 / store["train"], 1000 / live["data"]
    print(f"per sample: training step {step_ms:.1f} ms, decode + encode {media_ms:.1f} ms; online pays both, "
          f"so the speed-up is bounded by (step + media) / step = {(step_ms + media_ms) / step_ms:.1f}x "
          f"at these (tiny) shapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
