"""Videos/s of the Ray Data pipeline vs a sequential loop of the same stages on the same corpus.

    python bench/preprocess.py                 # 480 videos, ~4 min on 2 cores
    python bench/preprocess.py --set preprocess.encoder_pools=separate

Both sides run the same code (`DecodeStage`, `ClipEncoder`, `HubertEncoder`, `WriteStage`) with
the tiny models, the encoders' device and dtype from the same config (fp32 on the CPU), in batches
of the same size, into fresh stores. Two loop baselines, both always run: torch on 1 thread (the
sequential loop the >= 1.7x target was set against) and torch on every core (the pipeline's
encoder actor runs `preprocess.torch_threads`, 2 by default: the like-for-like baseline).

Start-up is treated the same on both sides and each line says what it includes:
- "end to end": from nothing running to the last part written. The loop's timer includes its model
  loads; the pipeline's includes starting Ray (as `affectflow preprocess` starts it), the actors
  and their model loads.
- "after the first part": the rate over the parts after the first (one batch of rows) on each side,
  so model loads and Ray start-up fall out of both alike; the rate a long job runs at.
Against the all-cores loop the pipeline can only win back decode's share of the CPU time (per
video decode ~17 ms, encoders ~58 ms on one thread), so on 2 cores its ceiling is ~1.4x that loop.
(The store's read rate and bytes on disk are measured by bench/store_read.py.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sequential(corpus: Path, models: Path, store: Path, cfg, threads: int) -> dict:
    """The same stages in a plain loop, one batch at a time, timed from before the model loads:
    seconds, samples ok, and the time and row count at the end of the first batch."""
    import torch

    from features.store import FeatureStore
    from pipelines.encoders import ClipEncoder, HubertEncoder
    from pipelines.job import plan
    from pipelines.manifest import read_mer2025
    from pipelines.stages import DecodeStage, WriteStage

    torch.set_num_threads(threads)
    p = cfg.preprocess
    pl = plan(cfg, models)
    t0 = time.perf_counter()
    decode = DecodeStage(p)
    enc = dict(device=p.device, dtype=p.dtype, torch_threads=threads)
    clip = ClipEncoder(pl.clip, **enc)
    hubert = HubertEncoder(pl.hubert, **enc)
    write = WriteStage(str(store), [s.to_json() for s in pl.specs])
    rows = [r.to_dict() for r in read_mer2025(corpus)]
    FeatureStore(str(store)).pending([r["name"] for r in rows], pl.specs)
    ok = done = 0
    first_s = first_n = 0
    for i in range(0, len(rows), p.batch_size):
        chunk = rows[i:i + p.batch_size]
        batch = {k: [r[k] for r in chunk] for k in chunk[0]}
        out = write(hubert(clip(decode(batch))))
        ok += int(sum(s == "ok" for s in out["status"]))
        done += len(chunk)
        if not first_n:
            first_s, first_n = time.perf_counter() - t0, done
    return {"seconds": time.perf_counter() - t0, "ok": ok, "done": done, "first_s": first_s, "first_n": first_n}


def pipeline(corpus: Path, models: Path, store: Path, cfg) -> dict:
    """The Ray Data job timed from before Ray starts (as `affectflow preprocess` starts it)."""
    import ray

    from core.runtime import init_ray
    from pipelines.job import PreprocessRequest, preprocess

    t0 = time.perf_counter()
    init_ray(cfg, log_to_driver=False)
    ray_s = time.perf_counter() - t0
    summary = preprocess(PreprocessRequest(corpus, store, cfg=cfg, models=models))
    seconds = time.perf_counter() - t0
    ray.shutdown()
    return {"seconds": seconds, "ok": summary.ok, "done": summary.processed,
            "first_s": ray_s + summary.first_part_s, "first_n": summary.first_part_n, "ray_s": ray_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=480, help="corpus size (default 480)")
    ap.add_argument("--work", default="/tmp/affectflow_bench_preprocess")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for the pipeline run (e.g. preprocess.encoder_pools=separate)")
    args = ap.parse_args(argv)

    from core.config import load_config
    from synth.corpus import write_corpus
    from synth.tiny_models import build_tiny_models

    work = Path(args.work)
    corpus, models = work / "corpus", work / "models"
    if not (corpus / "subtitle_chieng.csv").is_file() or len(list((corpus / "video").glob("*.mp4"))) != args.n:
        shutil.rmtree(corpus, ignore_errors=True)
        write_corpus(corpus, n=args.n, seed=0)
    if not (models / "clip" / "config.json").is_file():
        build_tiny_models(models, seed=0)
    cores = os.cpu_count() or 1
    # Parts of one batch, as the loop writes them: the first part then covers the same rows on both sides.
    cfg = load_config(
        None,
        [
            f"preprocess.batch_size={args.batch_size}",
            f"preprocess.write_batch_size={args.batch_size}",
            f"ray.num_cpus={cores}",
            *args.set,
        ],
    )
    p = cfg.preprocess
    print(f"corpus {args.n} videos, {cores} cores, batch {args.batch_size}, tiny CLIP/HuBERT on {p.device} "
          f"(dtype {p.dtype}: fp32 on the CPU) on both sides, load avg {os.getloadavg()[0]:.1f}")

    runs = {}
    for threads in sorted({1, cores}):
        store = work / f"seq{threads}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        runs[f"sequential loop, torch {threads} thread(s)"] = sequential(corpus, models, store, cfg, threads)
    store = work / "ray.zarr"
    shutil.rmtree(store, ignore_errors=True)
    runs[f"Ray Data pipeline, encoder torch {p.torch_threads} thread(s)"] = ray_run = pipeline(
        corpus, models, store, cfg
    )

    def rates(r: dict) -> tuple[float, float]:
        rest = r["seconds"] - r["first_s"]
        steady = (r["done"] - r["first_n"]) / rest if rest > 0 and r["done"] > r["first_n"] else float("nan")
        return r["ok"] / r["seconds"], steady

    one = rates(runs["sequential loop, torch 1 thread(s)"])
    allc = rates(runs[f"sequential loop, torch {cores} thread(s)"])
    print(f"{'':44s}{'':>22s}{'':>10s}{'vs loop':>10s}{'vs loop':>11s}")
    print(f"{'run':44s}{'measure':>22s}{'videos/s':>10s}{'1 thread':>10s}{f'{cores} threads':>11s}")
    for label, r in runs.items():
        end, steady = rates(r)
        print(f"{label:44s}{'end to end':>22s}{end:10.2f}{end / one[0]:9.2f}x{end / allc[0]:10.2f}x")
        print(f"{'':44s}{'after the first part':>22s}{steady:10.2f}{steady / one[1]:9.2f}x{steady / allc[1]:10.2f}x")
    print(f"end to end: {args.n} videos from nothing running, loops incl. model loads, pipeline incl. Ray start-up "
          f"({ray_run['ray_s']:.1f}s) + actor start and model loads; after the first part: rows "
          f"{ray_run['first_n'] + 1}..{args.n} on each side (start-up and first batch excluded alike)")
    print(f"targets: >= 1.7x the 1-thread loop (end to end {rates(ray_run)[0] / one[0]:.2f}x); like for like "
          f"(all-cores loop): {rates(ray_run)[0] / allc[0]:.2f}x end to end, {rates(ray_run)[1] / allc[1]:.2f}x after "
          f"the first part (ceiling ~1.4x on 2 cores)")
    print(f"load avg at end {os.getloadavg()[0]:.1f} (other jobs on this machine skew both sides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
