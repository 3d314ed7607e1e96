"""Videos/s of the Ray Data pipeline vs a sequential loop of the same stages on the same corpus.

    python bench/preprocess.py                 # 480 videos, ~3 min on 2 cores
    python bench/preprocess.py --set preprocess.encoder_pools=separate

Both sides run the same code (`DecodeStage`, `ClipEncoder`, `HubertEncoder`, `WriteStage`) with
the tiny models, in batches of the same size, into fresh stores. Baselines: the loop with torch
on 1 thread (one thing at a time: the sequential loop of the target, >= 1.7x on 2 cores) and
with torch on every core (intra-op parallel encoders, decode still serial). The pipeline is
reported with its start-up (Ray worker processes, model loads: a fixed ~8 s per job) and
after its first part (the rate a long job runs at). Against the all-cores loop the pipeline
can only win back decode's share of the CPU time: per video decode ~17 ms, encoders ~58 ms on
one thread, so on 2 cores the ceiling is ~1.4x that loop.
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


def sequential(corpus: Path, models: Path, store: Path, cfg, threads: int) -> tuple[float, int]:
    """The same stages in a plain loop, one batch at a time: (seconds, samples ok)."""
    import torch

    from features.store import FeatureStore
    from pipelines.encoders import ClipEncoder, HubertEncoder
    from pipelines.job import plan
    from pipelines.manifest import read_mer2025
    from pipelines.stages import DecodeStage, WriteStage, decode_kwargs

    torch.set_num_threads(threads)
    p = cfg.preprocess
    pl = plan(cfg, models)
    t0 = time.perf_counter()
    decode = DecodeStage(**decode_kwargs(p))
    clip = ClipEncoder(pl.clip, device="cpu", torch_threads=threads)
    hubert = HubertEncoder(pl.hubert, device="cpu", torch_threads=threads)
    write = WriteStage(str(store), [s.to_json() for s in pl.specs])
    rows = [r.to_dict() for r in read_mer2025(corpus)]
    FeatureStore(str(store)).pending([r["name"] for r in rows], pl.specs)
    ok = 0
    for i in range(0, len(rows), p.batch_size):
        chunk = rows[i:i + p.batch_size]
        batch = {k: [r[k] for r in chunk] for k in chunk[0]}
        out = write(hubert(clip(decode(batch))))
        ok += int(sum(s == "ok" for s in out["status"]))
    return time.perf_counter() - t0, ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=480, help="corpus size (default 480)")
    ap.add_argument("--work", default="/tmp/affectflow_bench_preprocess")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--skip-all-threads", action="store_true", help="skip the all-cores sequential baseline")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for the pipeline run (e.g. preprocess.encoder_pools=separate)")
    args = ap.parse_args(argv)

    import ray

    from core.config import load_config
    from synth.corpus import write_corpus
    from synth.tiny_models import build_tiny_models
    from pipelines.job import preprocess
    from core.runtime import init_ray

    work = Path(args.work)
    corpus, models = work / "corpus", work / "models"
    if not (corpus / "subtitle_chieng.csv").is_file() or len(list((corpus / "video").glob("*.mp4"))) != args.n:
        shutil.rmtree(corpus, ignore_errors=True)
        write_corpus(corpus, n=args.n, seed=0)
    if not (models / "clip" / "config.json").is_file():
        build_tiny_models(models, seed=0)
    cores = os.cpu_count() or 1
    # Parts of one batch, as the loop writes them: the first part then marks the end of start-up.
    cfg = load_config(None, [f"preprocess.batch_size={args.batch_size}", f"preprocess.write_batch_size={args.batch_size}",
                             f"ray.num_cpus={cores}", *args.set])
    print(f"corpus {args.n} videos, {cores} cores, batch {args.batch_size}, tiny CLIP/HuBERT, load avg {os.getloadavg()[0]:.1f}")

    results = {}
    for threads in ([1] if args.skip_all_threads else [1, cores]):
        store = work / f"seq{threads}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        secs, ok = sequential(corpus, models, store, cfg, threads)
        results[f"sequential loop, torch {threads} thread(s)"] = (secs, ok)

    init_ray(cfg, log_to_driver=False)  # as `affectflow preprocess` starts it
    store = work / "ray.zarr"
    shutil.rmtree(store, ignore_errors=True)
    summary = preprocess(corpus, store, models=models, cfg=cfg)
    results["Ray Data pipeline (incl. actor start-up)"] = (summary.seconds, summary.ok)
    if summary.steady_videos_per_s:
        n = summary.processed - summary.first_part_n
        results[f"Ray Data pipeline after its first part ({summary.first_part_s:.1f}s)"] = (
            n / summary.steady_videos_per_s, n)
    ray.shutdown()

    base = {k: n / secs for k, (secs, n) in results.items() if k.startswith("sequential")}
    one = base["sequential loop, torch 1 thread(s)"]
    allc = base.get(f"sequential loop, torch {cores} thread(s)")
    print(f"{'run':52s} {'seconds':>8s} {'videos':>6s} {'videos/s':>9s} {'vs 1-thread loop':>17s} "
          f"{'vs all-cores loop':>18s}")
    for label, (secs, ok) in results.items():
        rate = ok / secs
        vs_all = f"{rate / allc:17.2f}x" if allc else f"{'-':>18s}"
        print(f"{label:52s} {secs:8.1f} {ok:6d} {rate:9.2f} {rate / one:16.2f}x {vs_all}")
    print(f"load avg at end {os.getloadavg()[0]:.1f} (other jobs on this machine skew both sides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
