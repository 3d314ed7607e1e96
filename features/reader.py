"""Training-side readers over the store, joined with subtitles and labels: a torch Dataset and Ray Data read tasks.

Both give the same rows: name, visual ``[8, Dv]`` (face or frame), audio ``[8, Da]``, subtitle,
openset (list of label words, possibly empty) and reason (str or None). Only samples stored ok
in both selected feature groups appear. The Ray Dataset is `pipelines.operators.read_store`: it
maps :func:`read_task` over the tasks of :func:`read_tasks`; nothing here imports Ray.

Labels come from a ``labels`` table when one is given (e.g. `features.labels.read_corpus_labels`
of a corpus root), else from the ``openset``/``reason`` columns preprocessing stored with each
sample (:func:`stored_labels`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from core.errors import InputError, StoreError
from features.labels import LABEL_COLUMNS, normalize_labels, openset_from_store
from features.spec import EncoderSpec
from features.store import FeatureStore, feature_group

VISUAL = ("face", "frame")


def _stored_table(samples: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Label table of a samples table's ``openset``/``reason`` columns, and the ok names written without them."""
    n = len(samples)
    openset = list(samples["openset"]) if "openset" in samples else [None] * n
    reason = list(samples["reason"]) if "reason" in samples else [None] * n
    status = list(samples["status"]) if "status" in samples else ["ok"] * n
    # A part written before preprocessing stored labels lacks both columns: its cells read None.
    # A part with them holds text, "" for a sample with no label (see features.labels).
    has = [o is not None or r is not None for o, r in zip(openset, reason)]
    without = [nm for nm, h, st in zip(samples["name"], has, status) if not h and st == "ok"]
    table = normalize_labels(pd.DataFrame({
        "name": [nm for nm, h in zip(samples["name"], has) if h],
        "openset": [openset_from_store(o) for o, h in zip(openset, has) if h],
        "reason": [r for r, h in zip(reason, has) if h],
    }))
    return table, without


def stored_labels(store: "str | FeatureStore", storage_options: dict | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The labels preprocessing stored with the samples: ``(table, without)``.

    ``table``: ``name, openset, reason`` (as `features.labels.normalize_labels` gives; None where a
    sample has no label or no description) for every sample stored with the label columns;
    ``without``: the names of ok samples whose record has no label columns (written before
    preprocessing stored labels). Nothing stored with labels gives an empty table.
    """
    fstore = store if isinstance(store, FeatureStore) else FeatureStore(store, storage_options)
    return _stored_table(fstore.samples(columns=["status", *LABEL_COLUMNS]))


@dataclass(frozen=True)
class _Selection:
    visual: EncoderSpec
    audio: EncoderSpec


def _select(store: FeatureStore, visual: str, specs: Any) -> _Selection:
    if specs is None:
        if visual not in VISUAL:
            raise InputError(f"visual: {visual!r} is not one of {list(VISUAL)}")
        specs = [visual, "audio"]
    resolved = store.resolve(specs)
    vis = [s for s in resolved if s.modality in VISUAL]
    aud = [s for s in resolved if s.modality == "audio"]
    if len(vis) != 1 or len(aud) != 1:
        raise StoreError(f"select one visual (face or frame) and one audio spec, got {[s.label() for s in resolved]}")
    return _Selection(vis[0], aud[0])


def _label_maps(labels: pd.DataFrame | None) -> dict[str, tuple[list[str], str | None]]:
    if labels is None:
        return {}
    table = normalize_labels(labels)
    return {
        n: (list(o) if o is not None else [], r)
        for n, o, r in zip(table["name"], table["openset"], table["reason"])
        if o is not None or r is not None
    }


def _sample_text(
    store: FeatureStore, labels: pd.DataFrame | None
) -> tuple[dict[str, str], dict[str, tuple[list[str], str | None]]]:
    """Subtitles by name, and labels by name: ``labels`` when given, else the store's label columns."""
    df = store.samples(columns=["subtitle"] if labels is not None else ["subtitle", "status", *LABEL_COLUMNS])
    subs = {n: ("" if s is None else str(s)) for n, s in zip(df["name"], df["subtitle"])} if len(df) else {}
    if labels is None:
        labels = _stored_table(df)[0]
    return subs, _label_maps(labels)


def collate_features(items: Sequence[dict]) -> dict[str, Any]:
    """Stack FeatureDataset items into a batch: tensors stacked, strings and label lists as lists."""
    import torch

    return {
        "name": [it["name"] for it in items],
        "visual": torch.stack([it["visual"] for it in items]),
        "audio": torch.stack([it["audio"] for it in items]),
        "subtitle": [it["subtitle"] for it in items],
        "openset": [it["openset"] for it in items],
        "reason": [it["reason"] for it in items],
    }


try:
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover - torch is a dependency; keep the module importable without it
    _TorchDataset = object


class FeatureDataset(_TorchDataset):
    """Map-style torch Dataset over a store's ok samples; features held in memory at the stored dtype."""

    def __init__(
        self,
        store: "str | FeatureStore",
        labels: pd.DataFrame | None = None,
        visual: str = "face",
        specs: Any = None,
        names: Iterable[str] | None = None,
        dtype: Any = None,
        require_labels: bool = False,
        storage_options: dict | None = None,
    ) -> None:
        import torch

        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store, storage_options)
        sel = _select(self.store, visual, specs)
        self.specs = {"visual": sel.visual, "audio": sel.audio}
        self.visual_modality = sel.visual.modality
        self.dtype = dtype or torch.float32
        subs, label_map = _sample_text(self.store, labels)
        wanted = None if names is None else set(names)
        if require_labels:
            wanted = set(label_map) if wanted is None else wanted & set(label_map)
        data = self.store.read([sel.visual, sel.audio], names=wanted)
        self.names: list[str] = list(data["name"])
        self._visual = data[sel.visual.modality]
        self._audio = data["audio"]
        self.subtitles = [subs.get(n, "") for n in self.names]
        self.openset = [label_map.get(n, ([], None))[0] for n in self.names]
        self.reason = [label_map.get(n, ([], None))[1] for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        return {
            "name": self.names[i],
            "visual": torch.from_numpy(np.asarray(self._visual[i])).to(self.dtype),
            "audio": torch.from_numpy(np.asarray(self._audio[i])).to(self.dtype),
            "subtitle": self.subtitles[i],
            "openset": list(self.openset[i]),
            "reason": self.reason[i],
        }

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """One collated batch by fancy indexing (no per-item work): the fast path for training."""
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        return {
            "name": [self.names[i] for i in idx],
            "visual": torch.from_numpy(self._visual[idx]).to(self.dtype),
            "audio": torch.from_numpy(self._audio[idx]).to(self.dtype),
            "subtitle": [self.subtitles[i] for i in idx],
            "openset": [list(self.openset[i]) for i in idx],
            "reason": [self.reason[i] for i in idx],
        }

    def random_batches(self, batch_size: int, seed: int = 0, drop_last: bool = False) -> Iterator[dict[str, Any]]:
        """One epoch of shuffled batches (a seeded permutation), each as ``collate_features`` would give."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = np.random.default_rng(seed).permutation(len(self))
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])


# ---- Ray Data (the operator is pipelines.operators.read_store) ---------------------------------


def read_task(batch: dict[str, np.ndarray], path: str, storage_options: dict) -> dict[str, np.ndarray]:
    """Turn task rows of :func:`read_tasks` (one per part) into sample rows with features."""
    import zarr

    store = FeatureStore(path, storage_options)
    out: dict[str, list] = {k: [] for k in ("name", "visual", "audio", "subtitle", "openset", "reason")}
    for text in batch["task"]:
        task = json.loads(str(text))
        for key, locs in (("visual", task["visual"]), ("audio", task["audio"])):
            cache: dict[str, np.ndarray] = {}
            rows = []
            for part_path, row in locs:
                if part_path not in cache:
                    cache[part_path] = zarr.open_array(store.zstore, path=f"{part_path}/values", mode="r")[...]
                rows.append(cache[part_path][row])
            out[key].append(np.stack(rows).astype(np.float32))
        out["name"] += task["name"]
        out["subtitle"] += task["subtitle"]
        out["openset"] += task["openset"]
        out["reason"] += task["reason"]
    openset = np.empty(len(out["name"]), dtype=object)
    openset[:] = [list(o) for o in out["openset"]]
    return {
        "name": np.array(out["name"], dtype=object),
        "visual": np.concatenate(out["visual"]),
        "audio": np.concatenate(out["audio"]),
        "subtitle": np.array(out["subtitle"], dtype=object),
        "openset": openset,
        "reason": np.array(out["reason"], dtype=object),
    }


def read_tasks(
    fstore: FeatureStore,
    labels: pd.DataFrame | None = None,
    visual: str = "face",
    specs: Any = None,
    names: Iterable[str] | None = None,
    require_labels: bool = False,
) -> list[dict[str, str]]:
    """The read tasks of the FeatureDataset rows: one ``{"task": json}`` row per visual part.

    The driver reads only the commit records, subtitles and labels; workers read the feature chunks
    (:func:`read_task`), so the features stream instead of passing through the driver.
    """
    sel = _select(fstore, visual, specs)
    vis_lat = fstore._latest(feature_group(sel.visual))
    aud_lat = fstore._latest(feature_group(sel.audio))
    keep = vis_lat.ok() & aud_lat.ok()
    subs, label_map = _sample_text(fstore, labels)
    if names is not None:
        keep &= set(names)
    if require_labels:
        keep &= set(label_map)
    # One task per visual part: in the common case the audio rows sit in the part written alongside.
    by_part: dict[str, list[str]] = {}
    for name in sorted(keep):
        by_part.setdefault(vis_lat.rows[name][0].path, []).append(name)
    tasks = []
    for _, group in sorted(by_part.items()):
        tasks.append(
            {
                "task": json.dumps(
                    {
                        "name": group,
                        "visual": [(vis_lat.rows[n][0].path, vis_lat.rows[n][1]) for n in group],
                        "audio": [(aud_lat.rows[n][0].path, aud_lat.rows[n][1]) for n in group],
                        "subtitle": [subs.get(n, "") for n in group],
                        "openset": [label_map.get(n, ([], None))[0] for n in group],
                        "reason": [label_map.get(n, ([], None))[1] for n in group],
                    }
                )
            }
        )
    if not tasks:
        raise StoreError(f"{fstore.path}: no samples stored ok in both {sel.visual.label()} and {sel.audio.label()}")
    return tasks
