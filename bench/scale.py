"""Scale: a manifest of N rows (one small clip hard-linked under N names) through the pipeline.

    python bench/scale.py --n 132171          # the full MER2025 size (hours on 2 cores)
    python bench/scale.py --n 2000            # what fits in minutes here

Runs N/10 rows, then N rows, each into a fresh store, with the tiny encoders; prints wall time,
the time ratio (target <= 11: no super-linear cost in the manifest, resume index or store), the
time of a rerun on each finished store (resume: a no-op that reads the manifest and the index) and
the peak RSS summed over the driver and every Ray worker (target <= 3 GB), sampled every second.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_corpus(root: Path, n: int) -> Path:
    """MER2025 layout with ``n`` names, every media file a hard link to one sample's."""
    import numpy as np
    import pandas as pd

    from synth.corpus import write_sample

    seed_dir = root.parent / "seed_sample"
    if not (seed_dir / "video" / "seed.mp4").is_file():
        write_sample(seed_dir, "seed", "happy", np.random.default_rng(0), seconds=2.4)
    if (root / "subtitle_chieng.csv").is_file() and len(pd.read_csv(root / "subtitle_chieng.csv")) == n:
        return root
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("video", "audio", "openface_face"):
        (root / sub).mkdir(parents=True)
    names = [f"s{i:07d}" for i in range(n)]
    sources = {"video": seed_dir / "video" / "seed.mp4", "audio": seed_dir / "audio" / "seed.wav",
               "face": seed_dir / "openface_face" / "seed" / "seed.npy"}
    for name in names:
        targets = {"video": root / "video" / f"{name}.mp4", "audio": root / "audio" / f"{name}.wav",
                   "face": root / "openface_face" / name / f"{name}.npy"}
        targets["face"].parent.mkdir()
        for kind, target in targets.items():
            try:
                os.link(sources[kind], target)
            except OSError as exc:
                if exc.errno != errno.EMLINK:
                    raise
                # ext4 allows 65,000 links per file: continue from a fresh copy of the seed file.
                fresh = sources[kind].with_name(f"{uuid.uuid4().hex}{sources[kind].suffix}")
                shutil.copyfile(sources[kind], fresh)
                sources[kind] = fresh
                os.link(fresh, target)
    pd.DataFrame({"name": names, "english": ["hello there"] * n}).to_csv(root / "subtitle_chieng.csv", index=False)
    return root


class PeakRss:
    """Peak memory of this process and its descendants (the local Ray it started): summed PSS and RSS.

    PSS splits shared pages (Ray's shared-memory object store, shared libraries) between the
    processes that map them, so its sum is the memory the job really holds; summed RSS counts
    every shared page once per process and overstates it (both are printed).
    """

    def __init__(self):
        import psutil

        self.psutil, self.peak, self.peak_rss, self.stop = psutil, 0, 0, threading.Event()
        self.at_peak: list[tuple[int, str]] = []  # (pss, process title) when the sum peaked
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self):
        # ray.init() starts the GCS and raylet as our children, and the raylet forks every worker:
        # the process tree is this session's Ray and nothing else on a shared machine.
        me = self.psutil.Process()
        return [me, *me.children(recursive=True)]

    def _run(self):
        while not self.stop.is_set():
            pss = rss = 0
            snap = []
            for p in self._procs():
                try:
                    info = p.memory_full_info()
                    pss, rss = pss + info.pss, rss + info.rss
                    snap.append((info.pss, " ".join(p.cmdline())[:70]))
                except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                    pass
            if pss > self.peak:
                self.peak, self.at_peak = pss, sorted(snap, reverse=True)
            self.peak_rss = max(self.peak_rss, rss)
            # Each sample reads every process's smaps_rollup: ~15 % of a core at 2 Hz, taken
            # from the job it measures; once a second halves that.
            time.sleep(1.0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=132171)
    ap.add_argument("--work", default="/tmp/affectflow_bench_scale")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--only-large", action="store_true",
                    help="run the N pass only (its N/10 time then comes from an earlier run; no ratio printed)")
    args = ap.parse_args(argv)

    import subprocess

    import ray

    from core.config import load_config
    from pipelines.job import preprocess
    from core.runtime import init_ray

    work = Path(args.work)
    models = work / "models"
    if not (models / "clip" / "config.json").is_file():
        # In a child process: building the models imports torch, which the driver of
        # `affectflow preprocess` never does; the driver's memory is part of the figure.
        subprocess.run([sys.executable, "-m", "affectflow.cli", "tiny-models", str(models)],
                       check=True, cwd=Path(__file__).resolve().parents[1])
    cores = os.cpu_count() or 1
    cfg = load_config(None, [f"preprocess.batch_size={args.batch_size}", f"ray.num_cpus={cores}"])
    init_ray(cfg, log_to_driver=False)  # as `affectflow preprocess` starts it
    rows = []
    for n in ((args.n,) if args.only_large else (max(args.n // 10, 1), args.n)):
        t0 = time.perf_counter()
        corpus = build_corpus(work / f"corpus_{n}", n)
        built = time.perf_counter() - t0
        store = work / f"store_{n}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        with PeakRss() as rss:
            summary = preprocess(corpus, store, models=models, cfg=cfg)
        rows.append((n, summary.seconds, summary.ok, rss.peak, built))
        # The first part (write_batch_size rows) marks the end of start-up; a rate after it
        # means something only when most rows come after it.
        steady = (f"; {summary.steady_videos_per_s:.1f} after the first part at {summary.first_part_s:.1f}s"
                  if summary.processed >= 4 * summary.first_part_n else "")
        print(f"n={n}: {summary.ok} ok, {summary.failed} failed in {summary.seconds:.1f}s "
              f"({summary.videos_per_s:.1f} videos/s{steady}), peak PSS {rss.peak / 2**30:.2f} GiB "
              f"(summed RSS {rss.peak_rss / 2**30:.2f} GiB), load avg {os.getloadavg()[0]:.1f}; "
              f"corpus of hard links built in {built:.1f}s", flush=True)
        print("  processes at the peak (PSS): " + "; ".join(
            f"{title.split()[0].rsplit('/', 1)[-1] if not title.startswith('ray::') else title.split()[0]} "
            f"{pss / 2**20:.0f} MiB" for pss, title in rss.at_peak[:9]), flush=True)
        # Resume at this size: a rerun on the finished store reads the manifest and the store's
        # index, finds nothing pending and returns without starting a stage.
        again = preprocess(corpus, store, models=models, cfg=cfg)
        assert again.processed == 0 and again.skipped == n, again.format()
        print(f"  rerun on the finished store: a no-op in {again.seconds:.1f}s ({again.skipped} skipped)", flush=True)
    ray.shutdown()
    assert "torch" not in sys.modules, "the driver imported torch: its memory would be counted"
    peak = max(r[3] for r in rows)
    if len(rows) == 2:
        (n1, t1, *_), (n2, t2, *_) = rows
        print(f"time({n2}) / time({n1}) = {t2 / t1:.2f}  (target <= 11; rows ratio {n2 / n1:.1f})")
    print(f"peak PSS {peak / 2**30:.2f} GiB  (target <= 3 GiB), driver + its Ray, {cores} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
