"""Videos/s of the Ray Data pipeline vs a sequential loop of the same stages on the same corpus.

    python bench/preprocess.py --n 96 --work /tmp/bench_pre

Both sides run the same code (`DecodeStage`, `ClipEncoder`, `HubertEncoder`, `FeatureStore.write_part`)
with the tiny models, into fresh stores; the sequential loop is one process with torch on
1 thread and (second baseline) on every core. Target: pipeline >= 1.7x the 1-thread loop on 2 cores.
(The store's read rate and bytes on disk are measured by bench/store_read.py.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sequential(corpus: Path, models: Path, store: Path, cfg, threads: int) -> tuple[float, int]:
    """The same stages in a plain loop, one batch at a time: (seconds, samples ok)."""
    import torch

    from features.store import FeatureStore
    from pipelines.encoders import ClipEncoder, HubertEncoder
    from pipelines.job import WriteStage, decode_kwargs, plan
    from pipelines.manifest import read_mer2025
    from pipelines.stages import DecodeStage

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
    ap.add_argument("--n", type=int, default=96, help="corpus size (default 96)")
    ap.add_argument("--work", default="/tmp/affectflow_bench_preprocess")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--skip-all-threads", action="store_true", help="skip the all-cores sequential baseline")
    args = ap.parse_args(argv)

    import ray

    from affectflow.config import load_config
    from affectflow.synth_corpus import write_corpus
    from affectflow.tiny_models import build_tiny_models
    from pipelines.job import preprocess

    work = Path(args.work)
    corpus, models = work / "corpus", work / "models"
    if not (corpus / "subtitle_chieng.csv").is_file() or len(list((corpus / "video").glob("*.mp4"))) != args.n:
        shutil.rmtree(corpus, ignore_errors=True)
        write_corpus(corpus, n=args.n, seed=0)
    if not (models / "clip" / "config.json").is_file():
        build_tiny_models(models, seed=0)
    cores = os.cpu_count() or 1
    cfg = load_config(None, [f"preprocess.batch_size={args.batch_size}", f"ray.num_cpus={cores}"])
    print(f"corpus {args.n} videos, {cores} cores, batch {args.batch_size}, tiny CLIP/HuBERT, load avg {os.getloadavg()[0]:.1f}")

    results = {}
    for threads in ([1] if args.skip_all_threads else [1, cores]):
        store = work / f"seq{threads}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        secs, ok = sequential(corpus, models, store, cfg, threads)
        results[f"sequential loop, torch {threads} thread(s)"] = (secs, ok)

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    store = work / "ray.zarr"
    shutil.rmtree(store, ignore_errors=True)
    summary = preprocess(corpus, store, models=models, cfg=cfg)
    results["Ray Data pipeline (incl. actor start-up)"] = (summary.seconds, summary.ok)
    if summary.steady_videos_per_s:
        n = summary.processed - summary.first_part_n
        results[f"Ray Data pipeline after its first part ({summary.first_part_s:.1f}s)"] = (
            n / summary.steady_videos_per_s, n)
    ray.shutdown()

    base_s, base_n = results["sequential loop, torch 1 thread(s)"]
    print(f"{'run':52s} {'seconds':>8s} {'videos':>6s} {'videos/s':>9s} {'vs 1-thread loop':>17s}")
    for label, (secs, ok) in results.items():
        print(f"{label:52s} {secs:8.1f} {ok:6d} {ok / secs:9.2f} {(ok / secs) / (base_n / base_s):16.2f}x")
    print(f"load avg at end {os.getloadavg()[0]:.1f} (other jobs on this machine skew both sides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
