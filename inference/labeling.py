"""Batch labeling: a feature store or raw media -> a table of model outputs, on Ray Data.

Inputs: a feature store (features read back, no encoders run), or raw media — a MER2025-layout
corpus, a folder of videos, WebDataset shards, or manifest rows (:func:`label_rows`, used by the
benchmark) — which go through the preprocessing operators (decode, faces, audio, CLIP, HuBERT
[, Whisper]) in the same streaming job, no store written. An actor pool of
`inference.label_stage.LabelStage` holds the model and generates batched (``modeling.generate``).

Output (parquet or CSV): one row per (name, task), `inference.table` (columns, parts, merge).

- Resumable: (name, task) pairs already in the output are skipped (failed ones too, unless
  ``retry_failed``); each finished block is written at once as a part, merged at the end.
- Deterministic: rows sorted by (name, task), a fixed schema and compression; greedy decoding,
  or per-(seed, name, task) sampling seeds; and Ray Data's ``preserve_order`` so that batch
  composition (hence padding) is the same on every run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Sequence

from core.errors import InputError, MissingFileError
from core.paths import require_writable
from inference.label_stage import LabelStage, resolve_asks
from inference.table import COLUMNS, FAILED, PartWriter, done_pairs, existing, finish, read_table
from pipelines import operators
from pipelines.summary import JobSummary
from modeling.checkpoint import read_spec


@dataclass(kw_only=True)
class LabelSummary(JobSummary):
    """What one labeling run did: `JobSummary` over samples (total, skipped) and output rows (ok,
    failed: one per sample and task), plus the input, the model, the tasks and the table's size."""

    out: str
    input: str
    kind: str
    model_uri: str
    model_version: str
    tasks: list[str] = field(default_factory=list)
    holder: ClassVar[str] = "table"
    question: str = ""  # your own question, when one was asked
    rows: int = 0  # rows in the output table after the run
    shortened: int = 0  # rows of this run whose subtitle was shortened to fit the prompt budget
    prompt_tokens: int = 0  # that budget

    @property
    def samples(self) -> int:
        return self.total - self.skipped

    @property
    def done(self) -> int:
        return self.samples

    @property
    def samples_per_s(self) -> float:
        return self.per_s

    def lines(self) -> list[str]:
        return [
            f"output: {self.out} ({self.rows} rows)",
            f"input: {self.input} ({self.kind})",
            f"model: {self.model_uri}" + (f" (version {self.model_version})" if self.model_version else ""),
            f"tasks: {', '.join(self.tasks)}" + (f" ({self.question!r})" if self.question else ""),
            f"samples: {self.total} considered, {self.skipped} already labeled (skipped), {self.samples} labeled",
            f"rows: {self.ok} ok, {self.failed} failed",
            *self.failure_lines(),
            *filter(None, [self.state_line()]),
            *([f"subtitles shortened to fit the {self.prompt_tokens}-token prompt: {self.shortened} rows "
               "(their subtitle_cut column says by how many tokens)"] if self.shortened else []),
            self.time_line(),
        ]


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
    progress: Callable[[int, int | None], None] | None = None,
    question: str | None = None,
) -> LabelSummary:
    """Label ``input`` (or manifest ``rows``) with ``model`` into ``out`` (.parquet or .csv); resumable.

    ``model``: a checkpoint or run folder, or an MLflow model URI (``registry.resolve``).
    ``models``: the folder holding the ``clip/``/``hubert/`` encoders for raw media (default:
    ``preprocess.*_model``, ``paths.models``, or the tiny-models folder beside the base LLM).
    ``task``: a named task, ``both`` or a comma list; ``question`` asks your own instead (both
    default to ``label.task`` / ``label.question``). Unset arguments come from ``cfg`` (``label.*``,
    ``seed``). Joins or starts Ray.
    ``on_batch(rows)`` is called after each block of output rows is written (benches);
    ``progress(n, todo)`` then too, with ``n`` samples labeled in it and ``todo`` the samples this
    run labels (None while streaming WebDataset shards).
    """
    import ray

    from core.config import load_config
    from registry.resolve import resolve_model
    from core.errors import ModelRefError
    from core.tracking import tracking_uri as resolve_uri
    from core.runtime import init_ray
    from pipelines.manifest import unique_by_name

    t0 = time.perf_counter()
    cfg = cfg if cfg is not None else load_config()
    lc = dataclasses.replace(cfg.label, task=task or cfg.label.task,
                             question=cfg.label.question if question is None else question,
                             batch_size=batch_size or cfg.label.batch_size)
    lc.validate()
    seed = cfg.seed if seed is None else seed
    asks = resolve_asks(lc.task, lc.question, lc.labels, lc.valence_range)
    tasks, questions = [t for t, _ in asks], dict(asks)
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise InputError(f"--out {out}: the output must end in .parquet or .csv")
    require_writable(out, "--out", folder=False)  # before the model loads or a video is decoded
    out.parent.mkdir(parents=True, exist_ok=True)
    kind = "rows" if rows is not None else detect_input(input, layout)
    if kind not in ("store", "mer2025", "folder", "webdataset", "rows"):
        raise InputError(f"--layout {kind!r} is not one of store, mer2025, folder, webdataset")
    uri = resolve_uri(cfg.mlflow.tracking_uri, tracking_uri)
    try:
        resolved = resolve_model(model, tracking_uri=uri, llm_path=llm_path, check_timeout=cfg.mlflow.check_timeout_s)
    except ModelRefError as exc:
        raise InputError(str(exc)) from None
    spec = read_spec(resolved.checkpoint)
    base = Path(resolved.llm_path or spec.get("llm_path") or "")
    if not (base / "config.json").is_file():  # fail here, not in every actor's constructor
        raise InputError(f"base LLM {base} of model {model} not found (config.json missing): pass --llm-path DIR "
                          "or set $AFFECTFLOW_BASE_LLM")
    summary = LabelSummary(out=str(out), input=str(input if rows is None else f"{len(rows)} rows"), kind=kind,
                           model_uri=resolved.model_uri, model_version=resolved.version, tasks=tasks,
                           question=lc.question.strip(), prompt_tokens=lc.max_prompt_tokens)
    done = done_pairs(existing(out), retry_failed, questions)

    def pending(name: str) -> bool:
        return any((name, t) not in done for t in tasks)

    from modeling.sampling import DecodingSettings

    decoding = DecodingSettings.from_config(lc)
    visual_key = "visual" if kind == "store" else spec.get("visual_stream", "face")
    label_args = (resolved.to_dict(), asks, decoding.to_dict(), seed, visual_key)
    label_kwargs = dict(tracking_uri=uri, device=lc.device, torch_threads=lc.torch_threads)
    writer = PartWriter(out)
    init_ray(cfg)
    ctx = ray.data.DataContext.get_current()
    saved_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # same batches every run, so seeded outputs repeat
    try:
        ds = None
        if kind == "store":
            ds = _store_source(input, spec, questions, done, pending, writer, summary, limit, label_args,
                               label_kwargs, lc, resolved)
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

                    rows = read_manifest(Path(input), kind, follow_symlinks=p.follow_symlinks)
                items = [r.to_dict() if hasattr(r, "to_dict") else dict(r)
                         for r in unique_by_name(rows)][: limit if limit is not None else None]
                summary.total = len(items)
                items = [r for r in items if pending(r["name"])]
                summary.skipped = summary.total - len(items)
                source = operators.source(items, lc.batch_size) if items else None
            if source is not None:  # decode -> CLIP -> HuBERT [-> Whisper] -> label, no store
                ds = operators.decode(source, plan_.cfg, lc.batch_size)
                ds = operators.encode(ds, plan_, lc.batch_size)
                ds = operators.label(ds, LabelStage, label_args, label_kwargs, lc, _gpus(lc))
        seen: set[str] = set()
        if ds is not None:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                keep = [i for i, (n, t) in enumerate(zip(batch["name"], batch["task"])) if (str(n), str(t)) not in done]
                cols = {c: [batch[c][i] for i in keep] for c in COLUMNS}
                writer.write(cols)
                if cols["name"]:
                    summary.first_part(len(set(cols["name"])), t0)
                summary.count(cols["status"], cols["error"])
                summary.shortened += sum(1 for c in cols["subtitle_cut"] if int(c) > 0)
                seen.update(cols["name"])
                if on_batch is not None:
                    on_batch(len(cols["name"]))
                if progress is not None:
                    progress(len(set(cols["name"])), summary.total - summary.skipped if summary.total >= 0 else None)
    finally:
        ctx.execution_options.preserve_order = saved_order
    if summary.total < 0:  # streamed input: counted while streaming
        summary.skipped = len({n for n, _ in done if not pending(n)})
        summary.total = summary.skipped + len(seen)
    summary.rows = finish(out)
    status = read_table(out).column("status").to_pylist()
    summary.state_ok, summary.state_failed = status.count("ok"), len(status) - status.count("ok")
    summary.seconds = time.perf_counter() - t0
    return summary


def _store_source(store, spec, questions, done, pending, writer, summary, limit, label_args, label_kwargs, lc,
                  resolved):
    """The store path: failed samples become failed rows here; ok ones stream to the actor pool."""
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
        rows = [(n, t) for n in bad for t in questions if (n, t) not in done]
        cols = {"name": [n for n, _ in rows], "task": [t for _, t in rows], "question": [questions[t] for _, t in rows],
                "subtitle_cut": [0] * len(rows), "text": [""] * len(rows),
                "labels": [None] * len(rows), "model_uri": [resolved.model_uri] * len(rows),
                "model_version": [resolved.version] * len(rows), "status": [FAILED] * len(rows),
                "error": [failed[n] for n, _ in rows]}
        writer.write(cols)
        summary.count(cols["status"], cols["error"])
    good = [n for n in todo if n not in failed]
    if not good:
        return None
    ds = operators.read_store(fs, visual=visual.modality, specs=[visual, audio], names=good)
    return operators.label(ds, LabelStage, label_args, label_kwargs, lc, _gpus(lc))


def label_rows(rows: Sequence, model: str | Path, task: str = "ov", out: str | Path = "labels.parquet",
               batch_size: int | None = None, seed: int | None = None, **kwargs):
    """Label manifest rows (e.g. ``scoring.unibench.read_unibench``); returns the output table (pandas)."""
    label(None, model, task, out, batch_size, seed, rows=rows, **kwargs)
    return read_table(out).to_pandas()
