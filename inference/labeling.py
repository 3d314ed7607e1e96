"""Batch labeling: a feature store or raw media -> a table of model outputs, on Ray Data.

Inputs: a feature store (features read back, no encoders run), or raw media — a MER2025-layout
corpus, a folder of videos, WebDataset shards, or manifest rows (:func:`label_rows`, used by the
benchmark) — which go through the preprocessing stages (decode, faces, audio, CLIP, HuBERT
[, Whisper]) in the same streaming job, no store written. A Ray Data actor pool
(:class:`LabelStage`) holds the model and generates batched (``training.generate``).

Output (parquet or CSV): one row per (name, task) with columns :data:`COLUMNS`.

- Resumable: (name, task) pairs already in the output are skipped (failed ones too, unless
  ``retry_failed``). Each finished block is written at once as a part file under
  ``<out>.parts/``; at the end the old table and the parts are merged and the output is
  replaced atomically, so a killed job keeps what it finished and never leaves a torn table.
- Deterministic: rows sorted by (name, task), a fixed schema without pandas metadata, fixed
  compression; greedy decoding, or per-(seed, name, task) sampling seeds; and Ray Data's
  ``preserve_order`` so that batch composition (hence padding) is the same on every run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import InputError, MissingFileError
from training.checkpoint import read_spec

COLUMNS = ("name", "task", "text", "labels", "model_uri", "model_version", "status", "error")
TASKS = ("ov", "description")
OK, FAILED = "ok", "failed"
PARQUET_COMPRESSION = "zstd"



@dataclass
class LabelSummary:
    """What one labeling run did (samples are inputs, rows are (sample, task) outputs)."""

    out: str
    input: str
    kind: str
    model_uri: str
    model_version: str
    tasks: list[str] = field(default_factory=list)
    total: int = 0  # samples considered
    skipped: int = 0  # samples whose every task was already in the output
    ok: int = 0  # rows generated in this run
    failed: int = 0  # rows failed in this run
    rows: int = 0  # rows in the output table after the run
    seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return self.total - self.skipped

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        lines = [
            f"output: {self.out} ({self.rows} rows)",
            f"input: {self.input} ({self.kind})",
            f"model: {self.model_uri}" + (f" (version {self.model_version})" if self.model_version else ""),
            f"tasks: {', '.join(self.tasks)}",
            f"samples: {self.total} considered, {self.skipped} already labeled (skipped), {self.samples} labeled",
            f"rows: {self.ok} ok, {self.failed} failed",
        ]
        for kind, n in sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {kind}: {n}")
        lines.append(f"time: {self.seconds:.1f}s, {self.samples_per_s:.2f} samples/s")
        return "\n".join(lines)


def task_list(task: str) -> list[str]:
    if task == "both":
        return list(TASKS)
    if task not in TASKS:
        raise InputError(f"--task {task!r} is not one of ov, description, both")
    return [task]


# ---- the actor ---------------------------------------------------------------------------------


class LabelStage:
    """Ray Data actor: loads the model once, turns a batch of samples into (sample x task) output rows.

    Input columns: ``name``, ``subtitle``, the visual column (``visual`` from a store, ``face``
    or ``frame`` from the encoders), ``audio``, and optional ``status``/``error`` (a sample that
    failed upstream becomes a failed row). Never raises: a generation error fails its batch's rows.
    """

    def __init__(self, resolved: dict, tasks: Sequence[str], generation: dict, seed: int, visual_key: str,
                 tracking_uri: str | None = None, device: str = "auto", torch_threads: int | None = 1):
        import torch

        from training.generate import GenerationConfig
        from registry.resolve import ResolvedModel, is_mlflow_uri, load_model, resolve_model

        if torch_threads:
            torch.set_num_threads(torch_threads)
        res = ResolvedModel(**resolved)
        if not Path(res.checkpoint).is_dir() and is_mlflow_uri(res.model_uri):
            # Another node of a cluster: fetch the pinned version into this node's cache.
            res = dataclasses.replace(resolve_model(res.model_uri, tracking_uri=tracking_uri,
                                                    llm_path=res.llm_path or None), ref=res.ref)
        self.model, self.resolved = load_model(res, device=device)
        self.tasks = list(tasks)
        self.config = GenerationConfig(**generation)
        self.seed = seed
        self.visual_key = visual_key

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from training.generate import generate, sample_seed
        from scoring.parse import parse_template

        n = len(batch["name"])
        names = [str(x) for x in batch["name"]]
        status = [str(s) for s in batch["status"]] if "status" in batch else [OK] * n
        errors = [str(e) for e in batch["error"]] if "error" in batch else [""] * n
        subs = ["" if s is None else str(s) for s in batch.get("subtitle", [""] * n)]
        rows = [(i, t) for i in range(n) for t in self.tasks]
        text = {r: "" for r in rows}
        labels: dict[tuple, Any] = {r: None for r in rows}
        st = {r: status[r[0]] for r in rows}
        err = {r: errors[r[0]] if status[r[0]] != OK else "" for r in rows}
        todo = [r for r in rows if status[r[0]] == OK]
        if todo:
            idx = [i for i, _ in todo]
            try:
                outs = generate(
                    self.model, np.asarray(batch[self.visual_key], np.float32)[idx],
                    np.asarray(batch["audio"], np.float32)[idx], [subs[i] for i in idx], [t for _, t in todo],
                    self.config, [sample_seed(self.seed, names[i], t) for i, t in todo],
                )
                for r, out in zip(todo, outs):
                    text[r], labels[r] = out, parse_template(out)
            except Exception as exc:  # noqa: BLE001 - recorded as data, the job goes on
                for r in todo:
                    st[r], err[r] = FAILED, f"generate/{type(exc).__name__}: {str(exc)[:300]}"
        obj = lambda xs: np.array(list(xs) + [None], dtype=object)[:-1]  # noqa: E731 - 1-D object array
        return {
            "name": obj(names[i] for i, _ in rows),
            "task": obj(t for _, t in rows),
            "text": obj(text[r] for r in rows),
            "labels": obj(json.dumps(labels[r]) for r in rows),
            "model_uri": obj(self.resolved.model_uri for _ in rows),
            "model_version": obj(self.resolved.version for _ in rows),
            "status": obj(st[r] for r in rows),
            "error": obj(err[r] for r in rows),
        }


# ---- the table ---------------------------------------------------------------------------------


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("name", pa.string()), ("task", pa.string()), ("text", pa.string()), ("labels", pa.list_(pa.string())),
        ("model_uri", pa.string()), ("model_version", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ])


def _to_arrow(columns: dict[str, Sequence]):
    """Output columns (labels as JSON text or lists) -> an Arrow table of the fixed schema."""
    import pyarrow as pa

    labels = [json.loads(v) if isinstance(v, str) else (None if v is None else list(v)) for v in columns["labels"]]
    data = {k: [("" if v is None else str(v)) for v in columns[k]] for k in COLUMNS if k != "labels"}
    data["labels"] = labels
    return pa.table({k: data[k] for k in COLUMNS}, schema=_schema())


def _format_list(labels) -> str:
    return "" if labels is None else "[" + ", ".join(labels) + "]"


def read_table(path: str | Path):
    """An output table (parquet or CSV) as Arrow, in the fixed schema; CSV labels parsed back."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix == ".parquet":
        return pq.read_table(path).select(list(COLUMNS)).cast(_schema())
    import pandas as pd

    from features.labels import split_list_text

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a label table (missing column(s) {missing}); choose another --out")
    cols = {c: list(df[c]) for c in COLUMNS}
    cols["labels"] = [None if v == "" else split_list_text(v) for v in cols["labels"]]
    return _to_arrow(cols)


def write_table(table, path: str | Path) -> None:
    """Write sorted by (name, task), atomically (temp file + rename), byte-identical for equal content."""
    import pyarrow.parquet as pq

    path = Path(path)
    table = table.sort_by([("name", "ascending"), ("task", "ascending")]).replace_schema_metadata(None)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if path.suffix == ".parquet":
            pq.write_table(table, tmp, compression=PARQUET_COMPRESSION, write_statistics=False,
                           store_schema=False)
        else:
            import pandas as pd

            df = pd.DataFrame({c: table.column(c).to_pylist() for c in COLUMNS})
            df["labels"] = [_format_list(v) for v in df["labels"]]
            df.to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _existing(out: Path):
    """The output table plus parts left by an interrupted run (later rows win), or None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [read_table(out)] if out.exists() else []
    pdir = parts_dir(out)
    if pdir.is_dir():
        tables += [pq.read_table(p).cast(_schema()) for p in sorted(pdir.glob("part-*.parquet"))]
    if not tables:
        return None
    merged = pa.concat_tables(tables)
    # Keep the last occurrence of each (name, task): a retried row replaces its failed one.
    keys = list(zip(merged.column("name").to_pylist(), merged.column("task").to_pylist()))
    last = {k: i for i, k in enumerate(keys)}
    return merged.take(sorted(last.values()))


def _done_pairs(table, retry_failed: bool) -> set[tuple[str, str]]:
    if table is None:
        return set()
    names, tasks, status = (table.column(c).to_pylist() for c in ("name", "task", "status"))
    return {(n, t) for n, t, s in zip(names, tasks, status) if s == OK or not retry_failed}


class _PartWriter:
    """Writes each finished block as ``<out>.parts/part-<seq>-<uuid>.parquet`` (a killed job keeps it)."""

    def __init__(self, out: Path):
        self.dir = parts_dir(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seq = len(list(self.dir.glob("part-*.parquet")))

    def write(self, columns: dict[str, Sequence]) -> None:
        import pyarrow.parquet as pq

        if not len(columns["name"]):
            return
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
        pq.write_table(_to_arrow(columns), tmp, compression=PARQUET_COMPRESSION)
        os.replace(tmp, self.dir / f"part-{self.seq:06d}-{uuid.uuid4().hex[:8]}.parquet")
        self.seq += 1


def _finish(out: Path) -> int:
    """Merge the old table and the parts into ``out`` (atomically); returns the row count."""
    table = _existing(out)
    if table is None:
        write_table(_to_arrow({c: [] for c in COLUMNS}), out)
        return 0
    write_table(table, out)
    shutil.rmtree(parts_dir(out), ignore_errors=True)
    return table.num_rows


# ---- inputs ------------------------------------------------------------------------------------


def detect_input(path: str | Path, layout: str | None = None) -> str:
    """``store``, ``mer2025``, ``folder`` or ``webdataset`` (``layout`` wins when given)."""
    if layout:
        return layout
    text = str(path)
    p = Path(text)
    if "://" in text:
        return "webdataset" if text.endswith(".tar") else "store"
    if not p.exists():
        raise MissingFileError(f"input {p} does not exist (expected a feature store, a corpus root, "
                                "a folder of videos or WebDataset shards)")
    if p.is_file():
        if p.suffix == ".tar":
            return "webdataset"
        raise InputError(f"input {p} is a file but not a .tar shard: pass a store, a corpus or a folder")
    if (p / "zarr.json").is_file() or p.suffix == ".zarr":
        return "store"
    if (p / "video").is_dir() and any(p.glob("*.csv")):
        return "mer2025"
    if any(p.glob("*.tar")) and not (p / "video").is_dir():
        return "webdataset"
    return "folder"


def _encoder_dirs_fallback(spec: dict) -> Path | None:
    """The tiny-models folder next to the base LLM (clip/, hubert/, qwen2/), if that is the layout."""
    base = Path(spec.get("llm_path") or "")
    for root in (base.parent,):
        if (root / "clip" / "config.json").is_file() and (root / "hubert" / "config.json").is_file():
            return root
    return None


def plan_encoders(cfg, models, spec: dict):
    """``pipelines.job.plan`` for the raw-media path, and a check that the encoder widths fit the model."""
    from pipelines.job import plan

    p = cfg.preprocess
    if models is None and not (p.clip_model and p.hubert_model) and not (Path(cfg.paths.models) / "clip").is_dir():
        models = _encoder_dirs_fallback(spec)
    plan_ = plan(cfg, models)
    for s in plan_.specs:
        want = spec["visual_dim"] if s.modality in ("face", "frame") else spec["audio_dim"]
        if s.dim != want:
            raise InputError(f"the {s.modality} encoder ({s.encoder}) gives {s.dim}-d features but the model "
                              f"expects {want}-d: use the encoders the model was trained with (--models DIR)")
    return plan_


def _encode_chain(ds, plan_, label_args: tuple, label_kwargs: dict, lc, num_gpus: float):
    """decode -> CLIP -> HuBERT [-> Whisper] -> label, as Ray Data operators (no store)."""
    from ray.data import ActorPoolStrategy

    from pipelines.job import decode_kwargs, encode_ops
    from pipelines.stages import DecodeStage

    p = plan_.cfg
    ds = ds.map_batches(DecodeStage, fn_constructor_kwargs=decode_kwargs(p), batch_size=lc.batch_size,
                        compute=ActorPoolStrategy(min_size=1, max_size=p.decode_actors), num_cpus=p.decode_cpus)
    ds = encode_ops(ds, plan_, lc.batch_size)
    return _label_op(ds, label_args, label_kwargs, lc, num_gpus)


def _label_op(ds, label_args: tuple, label_kwargs: dict, lc, num_gpus: float):
    from ray.data import ActorPoolStrategy

    return ds.map_batches(LabelStage, fn_constructor_args=label_args, fn_constructor_kwargs=label_kwargs,
                          batch_size=lc.batch_size, compute=ActorPoolStrategy(size=lc.actors),
                          num_cpus=lc.actor_cpus, num_gpus=num_gpus or None)


def _gpus(lc) -> float:
    import ray

    if lc.actor_gpus:
        return lc.actor_gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 and lc.device in ("auto", "cuda") else 0.0


# ---- the job -----------------------------------------------------------------------------------


def label(
    input: str | Path | None,
    model: str | Path,
    task: str = "ov",
    out: str | Path = "labels.parquet",
    batch_size: int | None = None,
    seed: int | None = None,
    *,
    cfg=None,
    rows: Sequence | None = None,
    layout: str | None = None,
    models: str | Path | None = None,
    faces: str | None = None,
    limit: int | None = None,
    tracking_uri: str | None = None,
    llm_path: str | Path | None = None,
    retry_failed: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> LabelSummary:
    """Label ``input`` (or manifest ``rows``) with ``model`` into ``out`` (.parquet or .csv); resumable.

    ``model``: a checkpoint or run folder, or an MLflow model URI (``registry.resolve``).
    ``models``: the folder holding the ``clip/``/``hubert/`` encoders for raw media (default:
    ``preprocess.*_model``, ``paths.models``, or the tiny-models folder beside the base LLM).
    Unset arguments come from ``cfg`` (``label.*``, ``seed``). Joins or starts Ray.
    ``on_batch(rows)`` is called after each block of output rows is written (progress, benches).
    """
    import ray

    from core.config import load_config
    from registry.resolve import resolve_model
    from core.errors import ModelRefError
    from core.tracking import tracking_uri as resolve_uri
    from pipelines.job import items_source
    from core.runtime import init_ray

    t0 = time.perf_counter()
    cfg = cfg if cfg is not None else load_config()
    lc = dataclasses.replace(cfg.label, task=task or cfg.label.task,
                             batch_size=batch_size or cfg.label.batch_size)
    lc.validate()
    seed = cfg.seed if seed is None else seed
    tasks = task_list(lc.task)
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise InputError(f"--out {out}: the output must end in .parquet or .csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    kind = "rows" if rows is not None else detect_input(input, layout)
    if kind not in ("store", "mer2025", "folder", "webdataset", "rows"):
        raise InputError(f"--layout {kind!r} is not one of store, mer2025, folder, webdataset")
    uri = resolve_uri(cfg.mlflow.tracking_uri, tracking_uri)
    try:
        resolved = resolve_model(model, tracking_uri=uri, llm_path=llm_path)
    except ModelRefError as exc:
        raise InputError(str(exc)) from None
    spec = read_spec(resolved.checkpoint)
    base = Path(resolved.llm_path or spec.get("llm_path") or "")
    if not (base / "config.json").is_file():  # fail here, not in every actor's constructor
        raise InputError(f"base LLM {base} of model {model} not found (config.json missing): pass --llm-path DIR "
                          "or set $AFFECTFLOW_BASE_LLM")
    summary = LabelSummary(out=str(out), input=str(input if rows is None else f"{len(rows)} rows"), kind=kind,
                           model_uri=resolved.model_uri, model_version=resolved.version, tasks=tasks)
    done = _done_pairs(_existing(out), retry_failed)

    def pending(name: str) -> bool:
        return any((name, t) not in done for t in tasks)

    generation = dict(max_new_tokens=lc.max_new_tokens, do_sample=lc.do_sample, temperature=lc.temperature,
                      top_p=lc.top_p)
    visual_key = "visual" if kind == "store" else spec.get("visual_stream", "face")
    label_args = (resolved.to_dict(), tasks, generation, seed, visual_key)
    label_kwargs = dict(tracking_uri=uri, device=lc.device, torch_threads=lc.torch_threads)
    writer = _PartWriter(out)
    init_ray(cfg)
    ctx = ray.data.DataContext.get_current()
    saved_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # same batches every run, so seeded outputs repeat
    try:
        ds = None
        if kind == "store":
            ds = _store_source(input, spec, tasks, done, pending, writer, summary, limit, label_args, label_kwargs,
                               lc, resolved)
        else:
            p = dataclasses.replace(cfg.preprocess, layout=kind if kind != "rows" else cfg.preprocess.layout,
                                    faces=faces or ("opencv" if kind == "folder" else cfg.preprocess.faces))
            p.validate()
            plan_ = plan_encoders(dataclasses.replace(cfg, preprocess=p), models, spec)
            if kind == "webdataset":
                from pipelines.manifest import read_webdataset

                source = read_webdataset(input)
                if limit is not None:
                    source = source.limit(limit)
                skip = {n for n, _ in done if not pending(n)}
                if skip:  # a fraction of a CPU: whole-CPU tasks stall beside the actor pools on 2 cores
                    source = source.filter(lambda row: row["name"] not in skip, num_cpus=0.1)
                summary.total = -1
            else:
                if rows is None:
                    from pipelines.manifest import read_manifest

                    rows = read_manifest(Path(input), kind)
                items = _unique_rows(rows)[: limit if limit is not None else None]
                summary.total = len(items)
                items = [r for r in items if pending(r["name"])]
                summary.skipped = summary.total - len(items)
                source = items_source(items, lc.batch_size) if items else None
            if source is not None:
                ds = _encode_chain(source, plan_, label_args, label_kwargs, lc, _gpus(lc))
        seen: set[str] = set()
        if ds is not None:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                keep = [i for i, (n, t) in enumerate(zip(batch["name"], batch["task"])) if (str(n), str(t)) not in done]
                cols = {c: [batch[c][i] for i in keep] for c in COLUMNS}
                writer.write(cols)
                _tally(summary, cols)
                seen.update(cols["name"])
                if on_batch is not None:
                    on_batch(len(cols["name"]))
    finally:
        ctx.execution_options.preserve_order = saved_order
    if summary.total < 0:  # streamed input: counted while streaming
        summary.skipped = len({n for n, _ in done if not pending(n)})
        summary.total = summary.skipped + len(seen)
    summary.rows = _finish(out)
    summary.seconds = time.perf_counter() - t0
    return summary


def _tally(summary: LabelSummary, cols: dict[str, list]) -> None:
    from core.errors import error_kind

    for status, error in zip(cols["status"], cols["error"]):
        if status == OK:
            summary.ok += 1
        else:
            summary.failed += 1
            kind = error_kind(str(error)) or "unknown"
            summary.failures[kind] = summary.failures.get(kind, 0) + 1


def _unique_rows(rows: Sequence) -> list[dict]:
    """Manifest rows as dicts, first occurrence of each name."""
    seen, out = set(), []
    for r in rows:
        d = r.to_dict() if hasattr(r, "to_dict") else dict(r)
        if d["name"] not in seen:
            seen.add(d["name"])
            out.append(d)
    return out


def _store_source(store, spec, tasks, done, pending, writer, summary, limit, label_args, label_kwargs, lc, resolved):
    """The store path: failed samples become failed rows here; ok ones stream to the actor pool."""
    from features.reader import to_ray_dataset
    from features.store import FeatureStore
    from core.errors import StoreError

    fs = FeatureStore(str(store))
    try:
        visual, audio = fs.resolve([spec.get("visual_stream", "face"), "audio"])
    except StoreError as exc:
        raise InputError(str(exc)) from None
    for s, want in ((visual, spec["visual_dim"]), (audio, spec["audio_dim"])):
        if s.dim != want:
            raise InputError(f"{store}: the {s.label()} features are {s.dim}-d but the model expects {want}-d")
    ok = sorted(fs.done_names([visual, audio]))
    failed = fs.failed([visual, audio])
    names = sorted(set(ok) | set(failed))[: limit if limit is not None else None]
    summary.total = len(names)
    todo = [n for n in names if pending(n)]
    summary.skipped = summary.total - len(todo)
    bad = [n for n in todo if n in failed]
    if bad:
        rows = [(n, t) for n in bad for t in tasks if (n, t) not in done]
        cols = {"name": [n for n, _ in rows], "task": [t for _, t in rows], "text": [""] * len(rows),
                "labels": [None] * len(rows), "model_uri": [resolved.model_uri] * len(rows),
                "model_version": [resolved.version] * len(rows), "status": [FAILED] * len(rows),
                "error": [failed[n] for n, _ in rows]}
        writer.write(cols)
        _tally(summary, cols)
    good = [n for n in todo if n not in failed]
    if not good:
        return None
    ds = to_ray_dataset(fs, visual=visual.modality, specs=[visual, audio], names=good)
    return _label_op(ds, label_args, label_kwargs, lc, _gpus(lc))


def label_rows(rows: Sequence, model: str | Path, task: str = "ov", out: str | Path = "labels.parquet",
               batch_size: int | None = None, seed: int | None = None, **kwargs):
    """Label manifest rows (e.g. ``scoring.unibench.read_unibench``); returns the output table (pandas)."""
    label(None, model, task, out, batch_size, seed, rows=rows, **kwargs)
    return read_table(out).to_pandas()
