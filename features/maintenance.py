"""Store upkeep: delete uncommitted or superseded parts, compact small parts, inspect a store.

A mixin of :class:`features.store.FeatureStore`; run these only while no job writes to the store.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from core.errors import StoreError
from features.layout import PART_KEY, SAMPLES, failure_kind, failure_stage, part_id_for


class StoreMaintenance:
    """Vacuum, compact, disk usage and inspection over the store's parts (see :class:`features.store.FeatureStore`)."""

    def require_store(self) -> None:
        """Raise ``StoreError`` unless a feature store is at this path (for commands that only read or tidy one)."""
        if self._read_json("zarr.json") is None and not self.groups():
            raise StoreError(f"{self.path} is not a feature store (no zarr.json and no parts)")

    def vacuum(self, superseded: bool = False) -> dict[str, int]:
        """Delete uncommitted parts (and, with ``superseded``, parts whose every row was rewritten later).

        Run it only while no writer is writing: an in-flight part is uncommitted too.
        """
        removed = {"uncommitted": 0, "superseded": 0}
        for group in self.groups():
            parts, pending = self._parts(group)
            for pid in pending:
                self._rm(f"{group}/parts/{pid}")
                removed["uncommitted"] += 1
            if superseded:
                lat = self._latest(group, parts)
                for part in parts:
                    if all(lat.rows[nm][0] is not part for nm in part.names):
                        # the commit record first, so a reader never sees a committed part without data
                        self._rm(f"{part.path}/zarr.json")
                        self._rm(part.path)
                        removed["superseded"] += 1
        return removed

    def compact(self, part_size: int = 256) -> dict[str, int]:
        """Rewrite each group's live rows (latest record per name) into parts of ``part_size``, then drop the old parts.

        Small write batches make many small parts, and reads pay per part; run this after a job,
        only while no writer is writing (a retry committed during it could be superseded by a copy).
        """
        if part_size < 1:
            raise StoreError(f"part_size must be >= 1, got {part_size}")
        written = 0
        for group in self.groups():
            parts, _ = self._parts(group)
            lat = self._latest(group, parts)
            names = sorted(lat.rows)
            spec = parts[-1].spec if parts else None
            # Rows whose parts hold different arrays are never merged: a part without the label arrays
            # (written before preprocessing stored labels) must not read back as labelled "" (unlabelled).
            live = {lat.rows[n][0].path: lat.rows[n][0] for n in names}
            held = {path: tuple(sorted(p.arrays or self._array_names(path))) for path, p in live.items()}
            by_arrays: dict[tuple, list[str]] = {}
            for n in names:
                by_arrays.setdefault(held[lat.rows[n][0].path], []).append(n)
            chunks = [same[i : i + part_size] for same in by_arrays.values() for i in range(0, len(same), part_size)]
            if len(parts) <= len(chunks):
                continue  # already as few parts as the size and the array sets allow
            for chunk in chunks:
                sources = {lat.rows[n][0].path: lat.rows[n][0] for n in chunk}
                keys = {path: [k for k in (list(p.arrays) or self._array_names(path)) if k != "name"]
                        for path, p in sources.items()}
                wanted = [(path, k) for path, ks in keys.items() for k in ks]
                loaded = dict(zip(wanted, self.read_arrays([f"{path}/{k}" for path, k in wanted])))
                arrays: dict[str, np.ndarray] = {"name": np.array(chunk, dtype=object)}
                for key in sorted({k for ks in keys.values() for k in ks}):
                    cells = [loaded.get((lat.rows[n][0].path, key)) for n in chunk]
                    cells = [None if c is None else c[lat.rows[n][1]] for n, c in zip(chunk, cells)]
                    present = next(c for c in cells if c is not None)
                    if isinstance(present, str):
                        arrays[key] = np.array(["" if c is None else c for c in cells], dtype=object)
                    else:
                        arrays[key] = np.stack([np.zeros_like(present) if c is None else c for c in cells])
                status = [lat.rows[n][0].status[lat.rows[n][1]] for n in chunk]
                errors = {n: lat.rows[n][0].error_of(lat.rows[n][1]) for n in chunk}
                generation = 0
                while self._committed_record(group, f"c{part_id_for(chunk, [group], generation)}"):
                    generation += 1
                path = f"{group}/parts/c{part_id_for(chunk, [group], generation)}"
                part = self._write_arrays(path, arrays, {"committed": False, "spec": spec})
                record = {
                    "committed": True,
                    "committed_at": time.time_ns(),
                    "spec": spec,
                    "arrays": sorted(arrays),
                    "names": chunk,
                    "status": status,
                    "errors": {n: e for n, e in errors.items() if e},
                    "n": len(chunk),
                }
                part.attrs.update({PART_KEY: record})
                written += 1
        removed = self.vacuum(superseded=True)
        return {"written": written, "removed": removed["superseded"] + removed["uncommitted"]}

    def disk_bytes(self, key: str = "") -> int:
        """Bytes stored under ``key`` (the whole store by default)."""
        try:
            return int(self.fs.du(self._abs(key), total=True))
        except FileNotFoundError:
            return 0

    def inspect(self) -> dict[str, Any]:
        """Counts ok/failed per group, arrays with shapes and dtypes, encoder specs, failures, bytes on disk."""
        self.require_store()
        report: dict[str, Any] = {"path": self.path, "groups": [], "bytes": self.disk_bytes()}
        sample_lat = self._latest(SAMPLES)
        failures = sample_lat.failed()
        report["samples"] = {
            "total": len(sample_lat.rows),
            "ok": len(sample_lat.rows) - len(failures),
            "failed": len(failures),
        }
        report["failures"] = {
            "by_kind": dict(Counter(failure_kind(e) for e in failures.values()).most_common()),
            "by_stage": dict(Counter(failure_stage(e) for e in failures.values()).most_common()),
            "examples": [{"name": k, "error": failures[k]} for k in sorted(failures)[:10]],
        }
        for group in self.groups():
            parts, pending = self._parts(group)
            lat = self._latest(group, parts)
            n = len(lat.rows)
            entry: dict[str, Any] = {
                "group": group,
                "parts": len(parts),
                "uncommitted_parts": len(pending),
                "rows": n,
                "ok": len(lat.ok()),
                "failed": n - len(lat.ok()),
                "bytes": self.disk_bytes(group),
            }
            if group == SAMPLES:
                arrays = {"name": "str", "subtitle": "str", "status": "str", "error": "str"}
                entry["arrays"] = {k: {"shape": [n], "dtype": v} for k, v in arrays.items()}
            else:
                spec = self._group_spec(group)
                entry["spec_id"] = group.rsplit("/", 1)[-1]
                entry["modality"] = group.split("/")[1]
                entry["spec"] = spec.to_dict() if spec else None
                entry["arrays"] = {"name": {"shape": [n], "dtype": "str"}, "status": {"shape": [n], "dtype": "str"}}
                if spec:
                    entry["arrays"]["values"] = {"shape": [n, *spec.shape], "dtype": spec.dtype}
            report["groups"].append(entry)
        return report
