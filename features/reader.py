"""Training-side readers over the store, joined with subtitles and labels: a torch Dataset and Ray Data read tasks.

Both give the same rows: name, visual ``[8, Dv]`` (face or frame), audio ``[8, Da]``, subtitle,
openset (list of label words, possibly empty) and reason (str or None). Only samples stored ok
in both selected feature groups appear. The Ray Dataset is `pipelines.operators.read_store`: it
maps :func:`read_task` over the tasks of :func:`read_tasks`; nothing here imports Ray.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from features.spec import EncoderSpec
from features.store import FeatureStore, feature_group
from core.errors import InputError, StoreError

VISUAL = ("face", "frame")
LABEL_FILES = {
    "mercaptionplus": ("track2_train_mercaptionplus.csv", "track3_train_mercaptionplus.csv"),
    "ovmerd": ("track2_train_ovmerd.csv", "track3_train_ovmerd.csv"),
}


def _parse_openset(value: Any) -> list[str]:
    from features.labels import parse_openset

    return parse_openset(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def read_corpus_labels(corpus_root: str, subset: str = "mercaptionplus", storage_options: dict | None = None) -> pd.DataFrame:
    """``name, openset (list[str]), reason (str|None)`` from a MER2025 root's track2/track3 CSVs, outer-joined.

    Either file may be absent; with neither, the table is empty. ``subset``: mercaptionplus | ovmerd.
    """
    import fsspec

    if subset not in LABEL_FILES:
        raise InputError(f"read_corpus_labels: subset {subset!r} is not one of {sorted(LABEL_FILES)}")
    fs, root = fsspec.core.url_to_fs(str(corpus_root), **(storage_options or {}))
    track2, track3 = (f"{root.rstrip('/')}/{f}" for f in LABEL_FILES[subset])

    def load(path: str, column: str) -> pd.DataFrame | None:
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            try:
                # keep_default_na off: a sample named "NA" or "null" stays a name
                df = pd.read_csv(f, dtype=str, keep_default_na=False, encoding="utf-8")
            except ValueError as exc:  # pandas' ParserError, UnicodeDecodeError
                raise InputError(f"{path}: cannot read it as a UTF-8 CSV: {exc}") from None
        missing = [c for c in ("name", column) if c not in df.columns]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; expected 'name' and {column!r}, found {list(df.columns)}")
        return df[["name", column]].drop_duplicates("name", keep="last")

    t2, t3 = load(track2, "openset"), load(track3, "reason")
    if t2 is None and t3 is None:
        return pd.DataFrame({"name": pd.Series(dtype=object), "openset": pd.Series(dtype=object), "reason": pd.Series(dtype=object)})
    if t2 is None:
        df = t3.assign(openset=None)
    elif t3 is None:
        df = t2.assign(reason=None)
    else:
        df = t2.merge(t3, on="name", how="outer")
    return normalize_labels(df)


def normalize_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """Labels as ``name, openset (list[str] or None when unlabelled), reason (str or None)``."""
    if "name" not in labels.columns:
        raise InputError(f"labels need a 'name' column, found {list(labels.columns)}")
    n = len(labels)
    openset = [None if _missing(v) else _parse_openset(v) for v in labels["openset"]] if "openset" in labels else [None] * n
    reason = (
        [None if _missing(v) or str(v).strip() == "" else str(v) for v in labels["reason"]] if "reason" in labels else [None] * n
    )
    # object columns: pandas 3 would turn None into NaN in an inferred string column
    out = pd.DataFrame(
        {
            "name": pd.Series([str(v) for v in labels["name"]], dtype=object),
            "openset": pd.Series(openset, dtype=object),
            "reason": pd.Series(reason, dtype=object),
        }
    )
    return out.drop_duplicates("name", keep="last").reset_index(drop=True)


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


def _subtitles(store: FeatureStore) -> dict[str, str]:
    df = store.samples(columns=["subtitle"])
    if not len(df) or "subtitle" not in df:
        return {}
    return {n: ("" if s is None else str(s)) for n, s in zip(df["name"], df["subtitle"])}


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
        label_map = _label_maps(labels)
        wanted = None if names is None else set(names)
        if require_labels:
            wanted = set(label_map) if wanted is None else wanted & set(label_map)
        data = self.store.read([sel.visual, sel.audio], names=wanted)
        self.names: list[str] = list(data["name"])
        self._visual = data[sel.visual.modality]
        self._audio = data["audio"]
        subs = _subtitles(self.store)
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
    label_map = _label_maps(labels)
    if names is not None:
        keep &= set(names)
    if require_labels:
        keep &= set(label_map)
    subs = _subtitles(fstore)
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
