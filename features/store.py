"""The Zarr v3 feature store: log-structured, immutable parts with a commit flag written last.

Layout under the store root (any fsspec URL: a local path, ``file://``, ``s3://``, ``memory://``)::

    zarr.json                                   root group, attrs {"affectflow_store": 1}
    samples/parts/{part}/                       one group per write: name, subtitle, status, error, extra columns
    features/{modality}/{spec_id}/              attrs {"spec": EncoderSpec}: one group per encoder spec
    features/{modality}/{spec_id}/parts/{part}/ name, status, error, values [n, num_steps, dim] (one chunk)

Each part is written by exactly one writer, so no two writers ever touch the same chunk or shard.
A part is visible only once its group attributes say ``committed: true``; that rewrite of the
part's ``zarr.json`` is the last thing its writer does, and it carries the part's index (names,
status, errors, commit time), so resume and reads list parts and fetch one small object per part.
A name written twice (a retry) resolves to the latest committed part; readers never see duplicates.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import fsspec
import numpy as np
import zarr
import zarr.codecs
import zarr.errors
from fsspec.implementations.local import LocalFileSystem

from core.errors import StoreError
from features.layout import (
    FEATURES,
    PART_KEY,
    RESERVED,
    SAMPLES,
    STATUSES,
    STORE_VERSION,
    Latest,
    Part,
    feature_group,
    part_id_for,
    str_list,
)
from features.maintenance import StoreMaintenance
from features.spec import MODALITIES, EncoderSpec


class FeatureStore(StoreMaintenance):
    """A feature store at ``path`` (any fsspec URL); safe for many concurrent writers of disjoint samples."""

    def __init__(
        self,
        path: str,
        storage_options: dict | None = None,
        *,
        compression: str = "zstd",
        compression_level: int = 3,
    ) -> None:
        if compression not in ("zstd", "none"):
            raise ValueError(f"compression: {compression!r} is not one of ['zstd', 'none']")
        self.path = str(path)
        self.storage_options = dict(storage_options or {})
        self.fs, root = fsspec.core.url_to_fs(self.path, **self.storage_options)
        self.root = root.rstrip("/")
        if isinstance(self.fs, LocalFileSystem):
            self.zstore = zarr.storage.LocalStore(self.root)
        else:
            self.zstore = zarr.storage.FsspecStore.from_url(self.path, storage_options=self.storage_options or None)
        self.compression = compression
        self.compression_level = compression_level
        self._ensured: set[str] = set()

    def __repr__(self) -> str:
        return f"FeatureStore({self.path!r})"

    def __reduce__(self):
        # Ray ships the store to workers by its address, not its open handles.
        return (_rebuild_store, (self.path, self.storage_options, self.compression, self.compression_level))

    # ---- low-level file access ------------------------------------------------------------

    def _abs(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _read_json(self, key: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self._abs(key)))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def _read_many_json(self, keys: list[str]) -> dict[str, dict]:
        if not keys:
            return {}
        paths = [self._abs(k) for k in keys]
        got = self.fs.cat(paths, on_error="omit")
        by_path = {self.fs._strip_protocol(p): v for p, v in got.items()}
        out = {}
        for key, path in zip(keys, paths):
            data = got.get(path, by_path.get(self.fs._strip_protocol(path)))
            if isinstance(data, (bytes, bytearray)):
                try:
                    out[key] = json.loads(data)
                except ValueError:
                    continue  # a metadata object caught mid-write on a non-atomic store: not committed
        return out

    def _ls(self, key: str) -> list[str]:
        """Child folders under ``key`` (fresh: other processes may have written since).

        Files are skipped: ``zarr.json`` and the ``*.partial`` temporaries that a writer killed
        mid-write leaves behind.
        """
        path = self._abs(key)
        try:
            self.fs.invalidate_cache(path)
            entries = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]
        return sorted(n for n in names if n and not n.startswith("."))

    def _rm(self, key: str) -> None:
        path = self._abs(key)
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def _ensure_group(self, key: str, attrs: dict) -> None:
        """Make sure the group at ``key`` carries ``attrs``; idempotent, so concurrent writers agree."""
        if key in self._ensured:
            return
        meta = self._read_json(f"{key}/zarr.json" if key else "zarr.json")
        have = (meta or {}).get("attributes", {})
        if meta is None or any(have.get(k) != v for k, v in attrs.items()):
            try:
                group = zarr.open_group(self.zstore, path=key, mode="a")
            except zarr.errors.ContainsGroupError:  # another writer created it between our check and create
                group = zarr.open_group(self.zstore, path=key, mode="r+")
            # Every writer of this group writes the same attrs, so the last write is right whoever wins.
            group.attrs.update(attrs)
        self._ensured.add(key)

    # ---- writing --------------------------------------------------------------------------

    def _compressors(self):
        if self.compression == "none":
            return None
        return (zarr.codecs.ZstdCodec(level=self.compression_level),)

    def _write_arrays(self, path: str, arrays: dict[str, np.ndarray], attrs: dict) -> zarr.Group:
        self._rm(path)  # leftovers of an uncommitted attempt at this same part
        group = zarr.create_group(self.zstore, path=path, attributes={PART_KEY: attrs}, overwrite=True)
        for name, data in arrays.items():
            if data.dtype.kind in "OUS":
                arr = group.create_array(name, shape=data.shape, dtype=str, chunks=data.shape)
                arr[...] = np.asarray(data, dtype=str)
            else:
                arr = group.create_array(
                    name,
                    shape=data.shape,
                    dtype=data.dtype,
                    chunks=data.shape,
                    compressors=self._compressors(),
                    fill_value=0,
                )
                arr[...] = data
        return group

    def _committed_record(self, group: str, part_id: str) -> dict | None:
        meta = self._read_json(f"{group}/parts/{part_id}/zarr.json")
        rec = ((meta or {}).get("attributes") or {}).get(PART_KEY) or {}
        return rec if rec.get("committed") else None

    def write_part(self, specs: Sequence[EncoderSpec], batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Store one batch as one immutable part per group; returns the (name, status, error) summary.

        ``batch``: ``name``, optional ``subtitle``/``status`` ("ok"|"failed")/``error``, one
        ``[B, num_steps, dim]`` float column per spec modality, and any other 1-D columns
        (stored as sample metadata). Failed rows keep their error and get zero features.
        """
        specs = list(specs)
        modalities = [s.modality for s in specs]
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"write_part: one spec per modality, got {modalities}")
        if "name" not in batch:
            raise ValueError(f"write_part: the batch has no 'name' column (columns: {sorted(batch)})")
        names = str_list(batch["name"], "name")
        n = len(names)
        if n == 0:
            return {k: np.array([], dtype=object) for k in ("name", "status", "error")}
        if any(not name for name in names):
            raise ValueError("write_part: empty sample name in the batch")
        if len(set(names)) != n:
            dup = sorted(k for k, c in Counter(names).items() if c > 1)
            raise ValueError(f"write_part: repeated sample names in one batch: {dup[:5]}")

        def column(key: str, default: str) -> list[str]:
            if key not in batch:
                return [default] * n
            values = str_list(batch[key], key)
            if len(values) != n:
                raise ValueError(f"write_part: column {key!r} has {len(values)} rows, 'name' has {n}")
            return values

        status = column("status", "ok")
        errors = column("error", "")
        bad = sorted({s for s in status if s not in STATUSES})
        if bad:
            raise ValueError(f"write_part: status must be one of {list(STATUSES)}, got {bad}")
        for i in range(n):
            if status[i] == "failed" and not errors[i]:
                errors[i] = "unknown: failed without a reason"
            if status[i] == "ok":
                errors[i] = ""

        values: dict[str, np.ndarray] = {}
        for spec in specs:
            if spec.modality not in batch:
                raise ValueError(f"write_part: the batch has no {spec.modality!r} column for spec {spec.label()}")
            raw = np.asarray(batch[spec.modality])
            if raw.dtype == object:
                raw = np.stack([np.asarray(v, dtype=np.float32) for v in raw]) if len(raw) else raw
            want = (n, *spec.shape)
            if raw.shape != want:
                raise ValueError(
                    f"write_part: column {spec.modality!r} has shape {raw.shape}, spec {spec.label()} "
                    f"({spec.encoder}) expects {want}"
                )
            with np.errstate(over="ignore", invalid="ignore"):
                cast = raw.astype(spec.dtype)
            finite = np.isfinite(cast.reshape(n, -1)).all(axis=1)
            for i in np.flatnonzero(~finite):
                if status[i] == "ok":
                    status[i] = "failed"
                    errors[i] = (f"store: non-finite {spec.modality} features from {spec.encoder} "
                                 f"(overflow in {spec.dtype}?)")
            values[spec.modality] = cast
        failed_rows = np.array([s != "ok" for s in status])
        for arr in values.values():
            arr[failed_rows] = 0

        extra: dict[str, np.ndarray] = {}
        for key, col in batch.items():
            if key in RESERVED or key in modalities:
                continue
            arr = np.asarray(col)
            if arr.ndim != 1 or len(arr) != n or arr.dtype.kind not in "OUSbiuf":
                raise ValueError(
                    f"write_part: column {key!r} (shape {arr.shape}, dtype {arr.dtype}) is not a feature of "
                    f"{modalities} nor a 1-D metadata column; drop it before writing"
                )
            extra[key] = np.array(str_list(arr, key), dtype=object) if arr.dtype.kind in "OUS" else arr

        spec_ids = [s.spec_id() for s in specs]
        # The first generation not committed in any feature group: a rerun after a crash reuses
        # (overwrites) the crashed attempt's part, while a committed part is never rewritten.
        # Its samples part may be committed already (it commits first); rewriting it is harmless
        # since its names are not done until the feature parts commit.
        groups = [feature_group(s) for s in specs] or [SAMPLES]
        generation = 0
        while True:
            pid = part_id_for(names, spec_ids, generation)
            if not any(self._committed_record(g, pid) for g in groups):
                break
            generation += 1

        self._ensure_group("", {"affectflow_store": STORE_VERSION})
        name_arr = np.array(names, dtype=object)
        common = {
            "name": name_arr,
            "status": np.array(status, dtype=object),
            "error": np.array(errors, dtype=object),
        }
        index = {
            "names": names,
            "status": status,
            "errors": {nm: e for nm, e in zip(names, errors) if e},
            "n": n,
        }
        # Samples first: any sample whose features are committed has its metadata committed too.
        sample_arrays = {**common, "subtitle": np.array(column("subtitle", ""), dtype=object), **extra}
        todo = [(SAMPLES, None, sample_arrays)]
        for spec in specs:
            todo.append((feature_group(spec), spec, {**common, "values": values[spec.modality]}))
        for group, spec, arrays in todo:
            spec_dict = spec.to_dict() if spec else None
            part = self._write_arrays(f"{group}/parts/{pid}", arrays, {"committed": False, "spec": spec_dict})
            if spec is not None:
                self._ensure_group(group, {"spec": spec_dict})
            record = {"committed": True, "committed_at": time.time_ns(), "spec": spec_dict, "arrays": sorted(arrays),
                      **index}
            part.attrs.update({PART_KEY: record})
        return {"name": name_arr, "status": common["status"], "error": common["error"]}

    # ---- the index --------------------------------------------------------------------------

    def _parts(self, group: str) -> tuple[list[Part], list[str]]:
        """Committed parts of ``group`` (oldest commit first) and the ids of uncommitted ones."""
        ids = self._ls(f"{group}/parts")
        metas = self._read_many_json([f"{group}/parts/{pid}/zarr.json" for pid in ids])
        parts, pending = [], []
        for pid in ids:
            rec = ((metas.get(f"{group}/parts/{pid}/zarr.json") or {}).get("attributes") or {}).get(PART_KEY) or {}
            if not rec.get("committed"):
                pending.append(pid)
                continue
            parts.append(
                Part(
                    group=group,
                    part_id=pid,
                    names=tuple(rec["names"]),
                    status=tuple(rec["status"]),
                    errors=dict(rec.get("errors") or {}),
                    committed_at=int(rec["committed_at"]),
                    spec=rec.get("spec"),
                    arrays=tuple(rec.get("arrays") or ()),
                )
            )
        parts.sort(key=lambda p: (p.committed_at, p.part_id))
        return parts, pending

    def _latest(self, group: str, parts: list[Part] | None = None) -> Latest:
        """Latest committed record per name: later commits win (ties broken by part id)."""
        if parts is None:
            parts, _ = self._parts(group)
        latest = Latest(parts=parts)
        for part in parts:
            for row, name in enumerate(part.names):
                latest.rows[name] = (part, row)
        return latest

    def specs(self, modality: str | None = None) -> list[EncoderSpec]:
        """Encoder specs with a feature group in the store (of one modality, if given)."""
        out = []
        for mod in [modality] if modality else self._ls(FEATURES):
            for sid in self._ls(f"{FEATURES}/{mod}"):
                spec = self._group_spec(f"{FEATURES}/{mod}/{sid}")
                if spec is not None:
                    out.append(spec)
        return out

    def _group_spec(self, group: str) -> EncoderSpec | None:
        meta = self._read_json(f"{group}/zarr.json")
        data = ((meta or {}).get("attributes") or {}).get("spec")
        if data is None:  # group metadata lost to a creation race: every part carries the spec too
            parts, _ = self._parts(group)
            data = next((p.spec for p in parts if p.spec), None)
        return EncoderSpec.from_dict(data) if data else None

    def resolve(self, select: Any) -> list[EncoderSpec]:
        """Specs named by modalities (``"face"``), ``"face/<spec_id>"``, spec ids or EncoderSpecs."""
        items = [select] if isinstance(select, (str, EncoderSpec)) else list(select)
        available = self.specs()
        out = []
        for item in items:
            if isinstance(item, EncoderSpec):
                if item not in available:
                    raise StoreError(
                        f"{self.path}: no features for spec {item.label()} ({item.encoder}); "
                        f"stored: {[s.label() for s in available] or 'none'}"
                    )
                out.append(item)
                continue
            text = str(item)
            if text in MODALITIES:
                found = [s for s in available if s.modality == text]
            elif "/" in text:
                mod, sid = text.split("/", 1)
                found = [s for s in available if s.modality == mod and s.spec_id().startswith(sid)]
            else:
                found = [s for s in available if s.spec_id().startswith(text)]
            if not found:
                raise StoreError(
                    f"{self.path}: no feature group matches {text!r}; "
                    f"stored: {[s.label() for s in available] or 'none'}"
                )
            if len(found) > 1:
                listing = ", ".join(f"{s.label()} ({s.encoder}, {s.layer}, weights {s.weights_hash})" for s in found)
                raise StoreError(f"{self.path}: {text!r} is ambiguous, name one spec: {listing}")
            out.append(found[0])
        mods = [s.modality for s in out]
        if len(set(mods)) != len(mods):
            raise StoreError(f"select one spec per modality, got {[s.label() for s in out]}")
        return out

    def done_names(self, specs: Iterable[EncoderSpec]) -> set[str]:
        """Samples stored ok in a committed part of every given spec."""
        done: set[str] | None = None
        for spec in specs:
            ok = self._latest(feature_group(spec)).ok()
            done = ok if done is None else done & ok
        return done or set()

    def failed(self, specs: Iterable[EncoderSpec]) -> dict[str, str]:
        """Samples whose latest committed record failed in any given spec: name -> error."""
        out: dict[str, str] = {}
        for spec in specs:
            for name, err in self._latest(feature_group(spec)).failed().items():
                out.setdefault(name, err)
        return out

    def pending(self, names: Iterable[str], specs: Sequence[EncoderSpec], retry_failed: bool = False) -> list[str]:
        """``names`` still to compute, in their order: not done, and not failed unless ``retry_failed``."""
        specs = list(specs)
        done = self.done_names(specs)
        skip = set(done) if retry_failed else done | set(self.failed(specs))
        return [n for n in names if n not in skip]

    # ---- reading -----------------------------------------------------------------------------

    def read_arrays(self, paths: Sequence[str]) -> list[np.ndarray]:
        """Whole arrays at ``paths`` (relative to the root), fetched and decoded concurrently."""
        import asyncio

        from zarr.api.asynchronous import open_array
        from zarr.core.sync import sync

        async def one(path: str) -> np.ndarray:
            arr = await open_array(store=self.zstore, path=path, mode="r")
            return await arr.getitem(...)

        async def all_of() -> list[np.ndarray]:
            return list(await asyncio.gather(*(one(p) for p in paths)))

        return sync(all_of()) if paths else []

    def read(self, select: Any, names: Iterable[str] | None = None, dtype: Any = None) -> dict[str, np.ndarray]:
        """Features of samples ok in every selected spec, ordered by name: ``{"name", <modality>: [N, T, D]}``.

        ``select``: modalities, ``"modality/spec_id"``, spec ids or EncoderSpecs (one per modality).
        ``names`` restricts the rows (unknown or failed names are left out); ``dtype`` e.g. np.float32.
        """
        specs = self.resolve(select)
        latest = {s: self._latest(feature_group(s)) for s in specs}
        keep: set[str] | None = None
        for lat in latest.values():
            keep = lat.ok() if keep is None else keep & lat.ok()
        keep = keep or set()
        if names is not None:
            keep &= set(names)
        order = sorted(keep)
        out: dict[str, np.ndarray] = {"name": np.array(order, dtype=object)}
        for spec, lat in latest.items():
            out[spec.modality] = self._gather(lat, order, spec, dtype)
        return out

    def _gather(self, lat: Latest, order: list[str], spec: EncoderSpec, dtype: Any) -> np.ndarray:
        out = np.empty((len(order), *spec.shape), dtype=np.dtype(dtype or spec.dtype))
        by_part: dict[str, tuple[Part, list[int], list[int]]] = {}
        for i, name in enumerate(order):
            part, row = lat.rows[name]
            entry = by_part.setdefault(part.part_id, (part, [], []))
            entry[1].append(i)
            entry[2].append(row)
        entries = list(by_part.values())
        # Bounded batches of concurrent reads keep memory near one batch of parts beyond the output.
        for start in range(0, len(entries), 64):
            batch = entries[start : start + 64]
            for (part, dst, rows), values in zip(batch, self.read_arrays([f"{p.path}/values" for p, _, _ in batch])):
                out[np.asarray(dst)] = values[np.asarray(rows)]
        return out

    def samples(self, columns: Sequence[str] | None = None) -> "pandas.DataFrame":  # noqa: F821
        """One row per sample (latest record), by name: name, subtitle, status, error and any extra metadata.

        ``columns`` limits the arrays read (``name`` always comes, from the commit records).
        """
        import pandas as pd

        lat = self._latest(SAMPLES)
        live = []
        for part in lat.parts:
            rows = [r for r, nm in enumerate(part.names) if lat.rows[nm][0] is part]
            if rows:
                keys = [k for k in (list(part.arrays) or self._array_names(part.path)) if k != "name"]
                if columns is not None:
                    keys = [k for k in keys if k in columns]
                live.append((part, rows, keys))
        data = iter(self.read_arrays([f"{part.path}/{key}" for part, _, keys in live for key in keys]))
        out: dict[str, list] = {"name": []}
        for part, rows, keys in live:
            before = len(out["name"])
            out["name"].extend(part.names[r] for r in rows)
            for key in keys:
                values = next(data)
                col = out.setdefault(key, [None] * before)  # a column that earlier parts lacked
                col.extend(values[rows].tolist())
            for col in out.values():
                col.extend([None] * (len(out["name"]) - len(col)))
        if columns is not None:
            for key in columns:
                out.setdefault(key, [None] * len(out["name"]))
        elif not out["name"]:
            out.update({k: [] for k in RESERVED})
        # Plain object columns: building from lists is much faster than concatenating per-part frames.
        df = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in out.items()})
        lead = [c for c in RESERVED if c in df.columns]
        df = df[lead + sorted(c for c in df.columns if c not in lead)]
        return df.sort_values("name", kind="stable").reset_index(drop=True)

    def _array_names(self, path: str) -> list[str]:
        return [k for k in self._ls(path) if self.fs.exists(self._abs(f"{path}/{k}/zarr.json"))]

    # ---- housekeeping ----------------------------------------------------------------------

    def groups(self) -> list[str]:
        """Group paths holding parts: ``samples`` and ``features/{modality}/{spec_id}``."""
        out = [SAMPLES] if self._ls(SAMPLES) else []
        for mod in self._ls(FEATURES):
            out += [f"{FEATURES}/{mod}/{sid}" for sid in self._ls(f"{FEATURES}/{mod}")]
        return out


def _rebuild_store(path, storage_options, compression, compression_level) -> FeatureStore:
    return FeatureStore(path, storage_options, compression=compression, compression_level=compression_level)

