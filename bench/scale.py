"""Scale: a manifest of N rows through the pipeline at N/10 and at N, per-row rate and memory.

    python bench/scale.py --n 132171          # the full MER2025 size (hours on 2 cores)
    python bench/scale.py --n 2000            # what fits in minutes here (N >= 1,280: 8+ parts at N/10)

Runs N/10 rows, then N rows, each into a fresh store, with the tiny encoders. Every row has its
own files (copies of one synthetic sample, so every row does the same decode work), up to
``--distinct`` rows; past that, rows cycle over those copies. Before each pass the corpus files are
dropped from the page cache (``posix_fadvise(DONTNEED)`` after a sync), so each file's first read
comes from the disk, not from memory. Prints, per pass: the start-up on its own (Ray, once; the
manifest, the store's index, the actors and model loads up to the first written part) and the
steady per-row rate over the middle half of the rows (past the start-up and the pipeline's fill,
before its drain, alike in both passes), so fixed costs cannot hide per-row growth; the ratio of the per-row
cost at N to that at N/10 (target <= 1.1: no super-linear cost in the manifest, resume index or
store); the time of a rerun on each finished store (resume: a no-op that reads the manifest and
the index) and the peak memory summed over the driver and every Ray worker (target <= 3 GiB).
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_corpus(root: Path, n: int, distinct: int) -> Path:
    """MER2025 layout with ``n`` names; row i's media are copy i % ``distinct`` of one sample's files
    (copies: one inode each, so the page cache holds nothing of a copy until it is read)."""
    import numpy as np
    import pandas as pd

    from synth.corpus import write_sample

    seed_dir = root.parent / "seed_sample"
    if not (seed_dir / "video" / "seed.mp4").is_file():
        write_sample(seed_dir, "seed", "happy", np.random.default_rng(0), seconds=2.4)
    marker = root / f".built-{n}-{distinct}"
    if marker.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("video", "audio", "openface_face", "copies"):
        (root / sub).mkdir(parents=True)
    sources = {"video": seed_dir / "video" / "seed.mp4", "audio": seed_dir / "audio" / "seed.wav",
               "face": seed_dir / "openface_face" / "seed" / "seed.npy"}
    names = [f"s{i:07d}" for i in range(n)]
    for i, name in enumerate(names):
        copy = i % distinct
        targets = {"video": root / "video" / f"{name}.mp4", "audio": root / "audio" / f"{name}.wav",
                   "face": root / "openface_face" / name / f"{name}.npy"}
        targets["face"].parent.mkdir()
        for kind, target in targets.items():
            if i < distinct:
                shutil.copyfile(sources[kind], target)
            else:  # past --distinct: a hard link to the row's copy (ext4 allows 65,000 links per file)
                first = names[copy]
                src = {"video": root / "video" / f"{first}.mp4", "audio": root / "audio" / f"{first}.wav",
                       "face": root / "openface_face" / first / f"{first}.npy"}[kind]
                try:
                    os.link(src, target)
                except OSError as exc:
                    if exc.errno != errno.EMLINK:
                        raise
                    shutil.copyfile(src, target)
    pd.DataFrame({"name": names, "english": ["hello there"] * n}).to_csv(root / "subtitle_chieng.csv", index=False)
    marker.touch()
    return root


def drop_page_cache(root: Path) -> int:
    """Ask the kernel to drop ``root``'s files from the page cache (clean pages only: sync first); returns the count."""
    os.sync()
    count = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            count += 1
    return count


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


def middle_rate(stamps: list[tuple[float, int]], n: int) -> tuple[float, str]:
    """Rows/s between the parts written around 1/4 and 3/4 of ``n`` rows: the same share of each run, past
    its start-up and the pipeline's fill (rows decoded while the first part was still encoding), before
    its drain; and which rows that window covers."""
    a = next((s for s in stamps if s[1] >= n // 4), None)
    b = next((s for s in stamps if s[1] >= 3 * n // 4), None)
    if a is None or b is None or b[0] <= a[0]:
        return float("nan"), "-"
    return (b[1] - a[1]) / (b[0] - a[0]), f"{a[1] + 1}..{b[1]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=132171)
    ap.add_argument("--distinct", type=int, default=2000,
                    help="rows with files of their own (about 2.5 MB each); later rows reuse them (default 2000)")
    ap.add_argument("--work", default="/tmp/affectflow_bench_scale")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--write-batch-size", type=int, default=0,
                    help="rows per store part, both passes (default: N/80 within [batch size, 256], so that the N/10 "
                         "pass writes about 8 parts and its middle half spans several)")
    ap.add_argument("--only-large", action="store_true",
                    help="run the N pass only (its N/10 figures then come from an earlier run; no ratio printed)")
    args = ap.parse_args(argv)

    import subprocess

    import ray

    from core.config import load_config
    from core.runtime import init_ray
    from pipelines.job import PreprocessRequest, preprocess

    work = Path(args.work)
    models = work / "models"
    if not (models / "clip" / "config.json").is_file():
        # In a child process: building the models imports torch, which the driver of
        # `affectflow preprocess` never does; the driver's memory is part of the figure.
        subprocess.run([sys.executable, "-m", "affectflow.cli", "tiny-models", str(models)],
                       check=True, cwd=Path(__file__).resolve().parents[1])
    cores = os.cpu_count() or 1
    # Parts are never smaller than a batch; with N >= 1,280 the N/10 pass writes 8 parts or more.
    part = args.write_batch_size or max(min(args.n // 80, 256), args.batch_size)
    cfg = load_config(None, [f"preprocess.batch_size={args.batch_size}", f"preprocess.write_batch_size={part}",
                             f"ray.num_cpus={cores}"])
    t0 = time.perf_counter()
    init_ray(cfg, log_to_driver=False)  # as `affectflow preprocess` starts it
    ray_s = time.perf_counter() - t0
    print(f"start-up, once: Ray {ray_s:.1f}s ({cores} cores, batch {args.batch_size}, parts of {part} rows, "
          f"tiny encoders)", flush=True)
    rows = []
    for n in ((args.n,) if args.only_large else (max(args.n // 10, 1), args.n)):
        t0 = time.perf_counter()
        corpus = build_corpus(work / f"corpus_{n}", n, min(args.distinct, n))
        built = time.perf_counter() - t0
        dropped = drop_page_cache(corpus)
        store = work / f"store_{n}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        stamps: list[tuple[float, int]] = []  # (time, rows written so far), one per written part
        with PeakRss() as rss:
            summary = preprocess(PreprocessRequest(corpus, store, cfg=cfg, models=models),
                                 progress=lambda k, _: stamps.append((time.perf_counter(), k + (stamps[-1][1]
                                                                                                if stamps else 0))))
        steady, window = middle_rate(stamps, n)
        rows.append((n, summary, steady, rss.peak))
        print(f"n={n}: {summary.ok} ok, {summary.failed} failed in {summary.seconds:.1f}s; start-up (manifest, index, "
              f"actors, model loads, first part of {summary.first_part_n} rows) {summary.first_part_s:.1f}s; steady "
              f"{steady:.2f} rows/s over rows {window} (the middle half: no start-up, no pipeline fill or drain); "
              f"peak PSS {rss.peak / 2**30:.2f} GiB (summed RSS "
              f"{rss.peak_rss / 2**30:.2f} GiB); load avg {os.getloadavg()[0]:.1f}; corpus ({min(args.distinct, n)} "
              f"rows with files of their own, {dropped} files dropped from the page cache) built in {built:.1f}s",
              flush=True)
        print("  processes at the peak (PSS): " + "; ".join(
            f"{title.split()[0].rsplit('/', 1)[-1] if not title.startswith('ray::') else title.split()[0]} "
            f"{pss / 2**20:.0f} MiB" for pss, title in rss.at_peak[:9]), flush=True)
        # Resume at this size: a rerun on the finished store reads the manifest and the store's
        # index, finds nothing pending and returns without starting a stage.
        again = preprocess(PreprocessRequest(corpus, store, cfg=cfg, models=models))
        assert again.processed == 0 and again.skipped == n, again.format()
        print(f"  rerun on the finished store: a no-op in {again.seconds:.1f}s ({again.skipped} skipped)", flush=True)
    ray.shutdown()
    assert "torch" not in sys.modules, "the driver imported torch: its memory would be counted"
    peak = max(r[3] for r in rows)
    if len(rows) == 2:
        (n1, s1, r1, _), (n2, s2, r2, _) = rows
        print(
            f"per-row cost at {n2} / at {n1} = {r1 / r2:.2f} (steady rates {r2:.2f} / {r1:.2f} rows/s; target <= 1.1); "
            f"start-up {s2.first_part_s:.1f}s / {s1.first_part_s:.1f}s; whole runs {s2.seconds:.1f}s / "
            f"{s1.seconds:.1f}s = {s2.seconds / s1.seconds:.2f} for {n2 / n1:.0f}x the rows"
        )
    print(f"peak PSS {peak / 2**30:.2f} GiB  (target <= 3 GiB), driver + its Ray, {cores} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
