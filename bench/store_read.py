"""Feature-store read rate and bytes on disk vs MERTools' layout (one fp32 .npy per sample and modality).

Builds both layouts from the same random features in one run and prints the figures side by side,
at the same dtype: the store written at fp32 against the fp32 .npy files (what the layout and its
compression do). The store's default fp16 is measured on its own line against the fp32 store (what
the dtype does), so the two savings are never mixed. Random features barely compress; real ones
(smooth in time) do better, so the bytes here are an upper bound for the store.
Read rate = samples per second of one epoch of shuffled batches (batch 32) as float32 torch tensors:
for the store, including the one-time load into memory (``FeatureDataset``); for the baseline,
``np.load`` of each sample's two files per batch, as MERTools' dataloader does. Both read from a
warm page cache (the files were just written), which favours the per-file baseline least of all.

    .venv/bin/python bench/store_read.py [--n 2000] [--batch 32] [--part 256] [--compact N] [--compression zstd|none]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from features.reader import FeatureDataset
from features.spec import EncoderSpec
from features.store import FeatureStore


def specs(dtype: str) -> list[EncoderSpec]:
    """The face and audio specs of the store, stored at ``dtype``."""
    return [EncoderSpec("face", "clip-vit-large-patch14", "bench", "image_embeds", "none", 768,
                        preprocess={"image_size": 224}, dtype=dtype),
            EncoderSpec("audio", "chinese-hubert-large", "bench", "mean_last_4", "time_mean", 1024,
                        preprocess={"sample_rate": 16000}, dtype=dtype)]


def disk_usage(root: Path) -> tuple[int, int, int]:
    """(apparent bytes, allocated bytes, file count) under ``root``."""
    apparent = allocated = files = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return apparent, allocated, files


def build(root: Path, n: int, part: int, compression: str, seed: int) -> tuple[Path, Path, Path, list[str]]:
    """The same features as an fp32 store, an fp16 store and fp32 .npy files: (fp32 store, fp16 store, npy, names)."""
    rng = np.random.default_rng(seed)
    names = [f"sample_{i:06d}" for i in range(n)]
    stores = {d: FeatureStore(str(root / f"store_{d}.zarr"), compression=compression) for d in ("float32", "float16")}
    npy = root / "npy"
    (npy / "face").mkdir(parents=True)
    (npy / "audio").mkdir(parents=True)
    for start in range(0, n, part):
        chunk = names[start : start + part]
        face = rng.standard_normal((len(chunk), 8, 768), dtype=np.float32)
        audio = rng.standard_normal((len(chunk), 8, 1024), dtype=np.float32)
        for dtype, store in stores.items():
            store.write_part(specs(dtype), {"name": np.array(chunk), "subtitle": np.array(["a subtitle"] * len(chunk)),
                                            "face": face, "audio": audio})
        for i, name in enumerate(chunk):
            np.save(npy / "face" / f"{name}.npy", face[i])
            np.save(npy / "audio" / f"{name}.npy", audio[i])
    return root / "store_float32.zarr", root / "store_float16.zarr", npy, names


def read_store(path: Path, batch: int, seed: int) -> tuple[float, float, int]:
    import torch

    t0 = time.perf_counter()
    ds = FeatureDataset(str(path), dtype=torch.float32)
    t1 = time.perf_counter()
    seen = 0
    for b in ds.random_batches(batch, seed=seed):
        seen += b["visual"].shape[0]
        assert b["audio"].dtype == torch.float32
    return t1 - t0, time.perf_counter() - t1, seen


def read_npy(root: Path, names: list[str], batch: int, seed: int) -> tuple[float, int]:
    import torch

    order = np.random.default_rng(seed).permutation(len(names))
    t0 = time.perf_counter()
    seen = 0
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        face = torch.from_numpy(np.stack([np.load(root / "face" / f"{names[i]}.npy") for i in idx]))
        audio = torch.from_numpy(np.stack([np.load(root / "audio" / f"{names[i]}.npy") for i in idx]))
        seen += face.shape[0]
        assert audio.dtype == torch.float32
    return time.perf_counter() - t0, seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="samples (default 2000)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument(
        "--part", type=int, default=256, help="samples per store part (the write batch; store.samples_per_chunk)"
    )
    ap.add_argument("--compression", choices=["zstd", "none"], default="zstd")
    ap.add_argument("--compact", type=int, metavar="N", help="compact the store into parts of N before reading")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many epochs for each reader")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed after)")
    args = ap.parse_args(argv)

    root = Path(args.dir or tempfile.mkdtemp(prefix="store_read_"))
    try:
        t0 = time.perf_counter()
        store32, store16, npy_path, names = build(root, args.n, args.part, args.compression, args.seed)
        build_s = time.perf_counter() - t0
        if args.compact:
            for store in (store32, store16):
                FeatureStore(str(store)).compact(part_size=args.compact)
        z_app, z_alloc, z_files = disk_usage(store32)
        h_app, h_alloc, _ = disk_usage(store16)
        n_app, n_alloc, n_files = disk_usage(npy_path)

        runs: dict[str, list] = {"fp32": [], "fp16": [], "npy": []}
        for r in range(args.repeats):  # interleaved, so background load hits every reader alike
            runs["fp32"].append(read_store(store32, args.batch, args.seed + r))
            runs["npy"].append(read_npy(npy_path, names, args.batch, args.seed + r))
            runs["fp16"].append(read_store(store16, args.batch, args.seed + r))
        assert all(run[-1] == args.n for rs in runs.values() for run in rs)
        load_s, iter_s = min((ld + it, ld, it) for ld, it, _ in runs["fp32"])[1:]
        load16, iter16 = min((ld + it, ld, it) for ld, it, _ in runs["fp16"])[1:]
        npy_s = min(t for t, _ in runs["npy"])

        ours_rate = args.n / (load_s + iter_s)
        base_rate = args.n / npy_s
        rate16 = args.n / (load16 + iter16)
        print(
            f"store_read: {args.n} samples, random face [8,768] + audio [8,1024], random batches of {args.batch} read "
            f"as fp32 tensors, parts of {args.part}{f' compacted to {args.compact}' if args.compact else ''}, "
            f"compression {args.compression}; best of {args.repeats} epochs; built in {build_s:.1f}s"
        )
        print("same dtype on both sides (the layout and its compression):")
        rows = [
            ("", "zarr store (fp32)", "npy per sample (fp32)", "ours/baseline"),
            ("files", f"{z_files}", f"{n_files}", f"{z_files / n_files:.1%}"),
            ("bytes on disk (apparent)", f"{z_app:,}", f"{n_app:,}", f"{z_app / n_app:.1%}"),
            ("bytes on disk (allocated)", f"{z_alloc:,}", f"{n_alloc:,}", f"{z_alloc / n_alloc:.1%}"),
            ("load into memory (s)", f"{load_s:.3f}", "-", ""),
            ("epoch of batches (s)", f"{iter_s:.3f}", f"{npy_s:.3f}", ""),
            (
                "read rate incl. load (samples/s)",
                f"{ours_rate:,.0f}",
                f"{base_rate:,.0f}",
                f"{ours_rate / base_rate:.1f}x",
            ),
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            print("  " + r[0].ljust(widths[0]) + "  " + "  ".join(c.rjust(w) for c, w in zip(r[1:], widths[1:])))
        print(
            f"the store's default fp16 (the dtype alone, against the fp32 store): bytes {h_app:,} apparent "
            f"({h_app / z_app:.1%}), {h_alloc:,} allocated ({h_alloc / z_alloc:.1%}); read rate incl. load "
            f"{rate16:,.0f} samples/s ({rate16 / ours_rate:.1f}x the fp32 store, "
            f"{rate16 / base_rate:.1f}x the npy files)"
        )
        print(
            "targets (like for like, fp32): read rate >= 1x baseline: "
            f"{'met' if ours_rate >= base_rate else 'NOT met'}; "
            f"bytes <= 50% of baseline: {'met' if z_app <= 0.5 * n_app else 'NOT met'} (apparent), "
            f"{'met' if z_alloc <= 0.5 * n_alloc else 'NOT met'} (allocated)"
        )
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
