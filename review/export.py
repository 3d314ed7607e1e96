"""A label table, its corpus and its feature store -> a FiftyOne dataset, updated in place on a rerun.

The videos are the corpus files (one of an ``s3://`` corpus is fetched once into a cache folder);
their metadata is read with PyAV, so the App needs no ffprobe. The embeddings are the store's CLIP
and HuBERT features mean-pooled over time; FiftyOne Brain maps each to 2-D (no model runs). A rerun
matches samples by name: it adds new ones and rewrites the fields of the others, keeping reviewers'
tags, corrections and the tags on labels that did not change.
"""

from __future__ import annotations

import json
import mimetypes
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.errors import InputError, MissingFileError
from review.dataset import (
    CORRECTED_FIELD,
    EMBEDDINGS,
    EMOTION_FIELD,
    OV_FIELD,
    STORED_FIELD,
    WORKSPACE,
    fiftyone,
)

METHODS = ("umap", "tsne", "pca")
LAYOUTS = ("mer2025", "folder")


@dataclass(frozen=True)
class ExportRequest:
    """One export: the label table, the corpus holding its videos, the store (optional), the dataset name."""

    labels: Path
    corpus: str
    dataset: str
    store: str | None = None
    layout: str = "mer2025"
    cache: Path | None = None  # where videos of a URL corpus are fetched; default .affectflow/review-cache/<dataset>
    visual: str = "face"
    method: str = "umap"
    storage_options: dict | None = None


@dataclass
class ExportSummary:
    dataset: str
    added: int = 0
    updated: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it has no sample
    embedded: int = 0
    maps: list[str] = field(default_factory=list)  # brain keys of the 2-D maps computed

    def format(self) -> str:
        lines = [f"dataset {self.dataset!r}: {self.added} samples added, {self.updated} updated, "
                 f"{len(self.skipped)} left out; {self.embedded} with stored embeddings"
                 + (f"; 2-D maps: {', '.join(self.maps)}" if self.maps else "")]
        lines += [f"  left out {name}: {why}" for name, why in list(self.skipped.items())[:5]]
        if len(self.skipped) > 5:
            lines.append(f"  ... and {len(self.skipped) - 5} more")
        return "\n".join(lines)


def sample_fields(table) -> dict[str, dict[str, Any]]:
    """The label table's rows as sample fields by name (see `review.dataset`); label lists stay lists."""
    out: dict[str, dict[str, Any]] = {}
    for rec in table.to_pylist():
        fields = out.setdefault(rec["name"], {"model_uri": rec["model_uri"], "model_version": rec["model_version"]})
        task = rec["task"]
        fields[f"{task}_status"], fields[f"{task}_error"] = rec["status"], rec["error"]
        if task == OV_FIELD:
            fields[OV_FIELD] = rec["labels"]
            fields[f"{OV_FIELD}_text"] = rec["text"]
        else:
            fields[task] = rec["text"]
    return out


def table_metadata(path: Path) -> dict[str, Any]:
    """The parquet table's own key-value metadata (provenance: model reference, decoding settings), decoded;
    {} for a CSV table or one written without any."""
    if path.suffix != ".parquet":
        return {}
    import pyarrow.parquet as pq

    out: dict[str, Any] = {}
    for key, value in (pq.read_schema(path).metadata or {}).items():
        name = key.decode("utf-8", "replace")
        if name in ("pandas", "ARROW:schema"):
            continue
        text = value.decode("utf-8", "replace")
        try:
            out[name] = json.loads(text)
        except ValueError:
            out[name] = text
    return out


def video_metadata(fo, path: str):
    """``fo.VideoMetadata`` read with PyAV (size, rate, frame count, duration, codec); None if unreadable."""
    import av

    try:
        with av.open(path) as box:
            stream = box.streams.video[0]
            rate = float(stream.average_rate or stream.base_rate or 0)
            if box.duration:
                duration = float(box.duration) / av.time_base
            else:
                duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
            frames = int(stream.frames) or int(round(duration * rate))
            width, height = stream.codec_context.width, stream.codec_context.height
            codec = stream.codec_context.codec_tag or stream.codec_context.name
    except (av.FFmpegError, IndexError, OSError):
        return None
    if not (width and height and rate):
        return None
    return fo.VideoMetadata(size_bytes=os.path.getsize(path), mime_type=mimetypes.guess_type(path)[0] or "video/mp4",
                            frame_width=width, frame_height=height, frame_rate=rate, total_frame_count=frames,
                            duration=duration, encoding_str=str(codec))


def fetch_videos(urls: dict[str, str], cache: Path, storage_options: dict | None) -> dict[str, str]:
    """Local copies of the videos at fsspec ``urls`` (name -> URL) in ``cache``: fetched once (a file of
    the object's size is kept), concurrently; a missing object has no entry."""
    import fsspec

    if not urls:
        return {}
    cache.mkdir(parents=True, exist_ok=True)
    fs, _ = fsspec.core.url_to_fs(next(iter(urls.values())), **(storage_options or {}))
    local = {name: cache / (name + Path(url).suffix) for name, url in urls.items()}
    sizes = {}
    for name, url in urls.items():
        try:
            sizes[name] = fs.size(url)
        except FileNotFoundError:
            continue
    todo = [n for n in sizes if not (local[n].is_file() and local[n].stat().st_size == sizes[n])]
    if todo:
        fs.get([urls[n] for n in todo], [str(local[n]) for n in todo])
    return {n: str(local[n]) for n in sizes}


def _embeddings(req: ExportRequest, names: list[str]) -> tuple[dict[str, dict], dict[str, list[str]], dict[str, str]]:
    """From the store: ``{field: {name: vector}}`` (mean over time), stored OV labels and subtitles by name."""
    from features.reader import stored_labels
    from features.store import FeatureStore

    store = FeatureStore(req.store, req.storage_options)
    store.require_store()
    feats = store.read([req.visual, "audio"], names=names, dtype=np.float32)
    vectors = {
        "clip_embedding": dict(zip(feats["name"], feats[req.visual].mean(axis=1))),
        "hubert_embedding": dict(zip(feats["name"], feats["audio"].mean(axis=1))),
    }
    labels, _ = stored_labels(store)
    stored = {n: o for n, o in zip(labels["name"], labels["openset"]) if o is not None}
    samples = store.samples(columns=["subtitle"])
    subtitles = {n: s for n, s in zip(samples["name"], samples["subtitle"]) if s}
    return vectors, stored, subtitles


def _classifications(fo, labels) -> Any:
    return None if labels is None else fo.Classifications(classifications=[fo.Classification(label=x) for x in labels])


def _map_settings(method: str, n: int, dim: int) -> dict[str, Any]:
    """The reducer's settings for ``n`` points (the defaults need more neighbours than a small corpus has)."""
    if method == "umap":
        return {"num_neighbors": min(15, n - 1), "verbose": False}
    if method == "tsne":
        return {"perplexity": min(30.0, (n - 1) / 3), "pca_dims": min(50, n, dim), "svd_solver": "full",
                "verbose": False}
    return {"svd_solver": "full"}


def export(req: ExportRequest, progress: Callable[..., None] | None = None) -> ExportSummary:
    """Build or update the dataset ``req.dataset``; see the module docstring."""
    from inference.table import read_table
    from pipelines.manifest import read_manifest

    fo = fiftyone()
    if req.method not in METHODS:
        raise InputError(f"--method {req.method!r} is not one of {list(METHODS)}")
    if req.layout not in LAYOUTS:
        raise InputError(f"--layout {req.layout!r} is not one of {list(LAYOUTS)} (a review needs video files)")
    labels = Path(req.labels)
    if not labels.is_file():
        raise MissingFileError(f"label table {labels} does not exist")
    rows = sample_fields(read_table(labels))
    manifest = {r.name: r for r in read_manifest(req.corpus, req.layout, req.storage_options)}
    summary = ExportSummary(req.dataset)
    summary.skipped = {n: f"not in the corpus {req.corpus}" for n in rows if n not in manifest}
    if rows and len(summary.skipped) == len(rows):
        raise InputError(f"none of the {len(rows)} names of {labels} is in the corpus {req.corpus} "
                         f"(e.g. {sorted(rows)[0]!r}): is it the corpus that was labeled (--layout {req.layout})?")
    found = {n: manifest[n] for n in sorted(rows) if n in manifest}
    urls = {n: r.video for n, r in found.items() if "://" in r.video}
    cache = Path(req.cache) if req.cache else Path(".affectflow") / "review-cache" / req.dataset
    local = {n: r.video for n, r in found.items() if r.video and "://" not in r.video}
    local.update(fetch_videos(urls, cache.resolve(), req.storage_options))

    media: dict[str, tuple[str, Any]] = {}
    for name, row in found.items():
        path = local.get(name)
        meta = video_metadata(fo, path) if path and os.path.isfile(path) else None
        if meta is None:
            why = row.error or (f"{row.video} cannot be read as a video" if path and os.path.isfile(path)
                                else f"{row.video or 'its video'} does not exist")
            summary.skipped[name] = why
        else:
            media[name] = (str(Path(path).resolve()), meta)
        if progress:
            progress(1, len(found))
    names = sorted(media)

    vectors: dict[str, dict] = {}
    stored: dict[str, list[str]] = {}
    subtitles: dict[str, str] = {}
    if req.store:
        vectors, stored, subtitles = _embeddings(req, names)
    summary.embedded = len(vectors.get("clip_embedding", {}))

    # field -> name -> value; None clears a known sample's field (a label that is gone after relabeling).
    values: dict[str, dict[str, Any]] = {}

    def put(key: str, name: str, value: Any) -> None:
        values.setdefault(key, {})[name] = value

    for name in names:
        path, meta = media[name]
        put("filepath", name, path)
        put("metadata", name, meta)
        put("subtitle", name, found[name].subtitle or subtitles.get(name) or "")
        for key, value in rows[name].items():
            if key == OV_FIELD:
                put(OV_FIELD, name, _classifications(fo, value))
                put(EMOTION_FIELD, name, fo.Classification(label=value[0]) if value else None)
            else:
                put(key, name, value)
        if req.store:  # without one, a rerun leaves what an earlier export took from a store
            put(STORED_FIELD, name, _classifications(fo, stored.get(name)))
        for key, by_name in vectors.items():
            put(key, name, by_name.get(name))

    dataset = _write(fo, req.dataset, names, values, summary)
    for key, brain_key in EMBEDDINGS.items():
        if _map(dataset, key, brain_key, req.method):
            summary.maps.append(brain_key)
    if summary.maps:
        # What `review open` shows: the grid beside the first map, coloured by the first OV label.
        grid = fo.Panel(type="Samples", pinned=True)
        plot = fo.Panel(type="Embeddings", state={"brainResult": summary.maps[0],
                                                  "colorByField": f"{EMOTION_FIELD}.label"})
        # Each side names its active panel: the App draws only a space's active child.
        space = fo.Space(children=[fo.Space(children=[grid], active_child=grid.component_id),
                                   fo.Space(children=[plot], active_child=plot.component_id)],
                         orientation="horizontal")
        dataset.save_workspace(WORKSPACE, space, description="samples beside their embeddings", overwrite=True)
    dataset.info.update({
        "label_table": str(labels.resolve()), "corpus": str(req.corpus), "store": str(req.store or ""),
        "visual": req.visual, "map_method": req.method,
        # JSON text: its keys may hold dots, which a MongoDB document key should not.
        "label_table_metadata": json.dumps(table_metadata(labels), sort_keys=True),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    dataset.save()
    return summary


LABEL_FIELDS = (OV_FIELD, EMOTION_FIELD, STORED_FIELD)


def _label_words(value) -> list[str] | None:
    if value is None:
        return None
    items = getattr(value, "classifications", None)
    return [c.label for c in items] if items is not None else [value.label]


def _write(fo, name: str, names: list[str], values: dict[str, dict[str, Any]], summary: ExportSummary):
    """Create the persistent dataset (a unique index on ``name``) or update it: new names are added, the
    fields of known ones rewritten; a label field whose words did not change is left as is (its tags stay)."""
    dataset = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name, persistent=True)
    # Declared up front, so the App shows them and filters on them even while no sample has a value.
    fixed = {"name": (fo.StringField,), CORRECTED_FIELD: (fo.ListField, {"subfield": fo.StringField}),
             OV_FIELD: (fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Classifications}),
             EMOTION_FIELD: (fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Classification}),
             STORED_FIELD: (fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Classifications})}
    schema = dataset.get_field_schema()
    for key, (ftype, *kwargs) in fixed.items():
        if key not in schema:
            dataset.add_sample_field(key, ftype, **(kwargs[0] if kwargs else {}))
    if "name" not in dataset.list_indexes():
        dataset.create_index("name", unique=True)
    known = set(dataset.values("name"))
    new = [n for n in names if n not in known]
    old = [n for n in names if n in known]
    samples = []
    for n in new:
        sample = fo.Sample(filepath=values["filepath"][n], name=n)
        for key, by_name in values.items():
            if key != "filepath" and by_name.get(n) is not None:
                sample[key] = by_name[n]
        samples.append(sample)
    if samples:
        dataset.add_samples(samples, progress=False)
    if old:
        view, keep = dataset.select_by("name", old), set(old)
        for key, by_name in values.items():
            update = {n: v for n, v in by_name.items() if n in keep}
            if key in LABEL_FIELDS and key in dataset.get_field_schema():
                before = dict(zip(view.values("name"), view.values(key)))
                update = {n: v for n, v in update.items() if _label_words(before.get(n)) != _label_words(v)}
            given = [v for v in update.values() if v is not None]
            if update and (given or key in dataset.get_field_schema()):
                if key not in dataset.get_field_schema():
                    dataset.add_sample_field(key, *_field_type(fo, given[0]))
                dataset.set_values(key, update, key_field="name")
    summary.added, summary.updated = len(new), len(old)
    return dataset


def _field_type(fo, value) -> tuple:
    """(field type,) of a field first set on known samples by an update: embeddings or text (the label
    fields are declared when the dataset is opened)."""
    return (fo.VectorField,) if isinstance(value, np.ndarray) else (fo.StringField,)


def _map(dataset, key: str, brain_key: str, method: str) -> bool:
    """A 2-D map of the embeddings in ``key`` under ``brain_key`` (replacing an earlier one); False when
    fewer than three samples have them."""
    import fiftyone.brain as fob

    if key not in dataset.get_field_schema():
        return False
    view = dataset.exists(key)
    n = len(view)
    if n < 3:
        return False
    if brain_key in dataset.list_brain_runs():
        dataset.delete_brain_run(brain_key)
    dim = len(view.first()[key])
    fob.compute_visualization(view, embeddings=key, method=method, brain_key=brain_key, num_dims=2, seed=0,
                              progress=False, **_map_settings(method, n, dim))
    return True
