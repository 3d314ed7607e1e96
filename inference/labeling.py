"""Batch labeling: a feature store or raw media -> a table of model outputs, on Ray Data.

A job is a :class:`LabelRequest` (built by the command from the config and its flags). Inputs: a
feature store (features read back, no encoders run), or raw media — a MER2025-layout corpus, a
folder of videos, WebDataset shards, or manifest rows (``LabelRequest.rows``, the benchmark's) —
which go through the preprocessing operators (decode, faces, audio, CLIP, HuBERT [, Whisper]) in
the same streaming job, no store written. An actor pool of
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

from core.config import Config, load_config
from core.errors import InputError, MissingFileError
from core.paths import absolute, require_writable
from inference.label_stage import LabelStage, StageSpec, resolve_asks
from inference.table import COLUMNS, FAILED, PartWriter, done_pairs, existing, finish, read_table, recorded_provenance
from modeling.checkpoint import read_spec
from pipelines import operators
from pipelines.summary import STATE_EXAMPLES, JobSummary

KINDS = ("store", "mer2025", "folder", "webdataset", "rows")


@dataclass(frozen=True)
class LabelRequest:
    """One labeling job, as the command built it from the config and its flags (paths made absolute here).

    ``cfg`` says what to ask and how to decode (``label.*``: task, question, batch size, decoding),
    the ``seed``, the MLflow URI (``mlflow.*``), the media settings (``preprocess.*``) and Ray
    (``ray.*``); the fields say the rest.
    """

    input: str | Path | None  # a store, a MER2025 corpus root, a folder of videos or WebDataset shards
    model: str | Path  # a checkpoint or run folder, or an MLflow model URI (`registry.resolve`)
    out: Path = Path("labels.parquet")  # the table: .parquet or .csv (resumable)
    cfg: Config = field(default_factory=load_config)
    rows: tuple | None = None  # manifest rows (`ManifestRow`s or dicts) instead of ``input``
    layout: str | None = None  # the input's kind (store, mer2025, folder, webdataset); None: detected
    models: Path | None = None  # encoders (clip/, hubert/[, whisper/]) for raw media; None: as `plan_encoders`
    faces: str | None = None  # face source for raw media; None: preprocess.faces (opencv for a folder)
    limit: int | None = None  # label at most this many samples
    llm_path: Path | None = None  # the base LLM of a model logged without it
    retry_failed: bool = False  # redo rows that failed in an earlier run

    def __post_init__(self) -> None:
        if (self.input is None) == (self.rows is None):
            raise ValueError("a LabelRequest takes an input path or manifest rows, not both or neither")
        put = object.__setattr__
        put(self, "input", absolute(self.input))
        put(self, "out", absolute(self.out))
        put(self, "models", absolute(self.models))
        put(self, "llm_path", absolute(self.llm_path))
        if self.rows is not None:
            put(self, "rows", tuple(self.rows))


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
    provenance: dict = field(default_factory=dict)  # what the table records: model and exact decoding settings

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
            *provenance_lines(self.provenance),
            f"samples: {self.total} considered, {self.skipped} already labeled (skipped), {self.samples} labeled",
            f"rows: {self.ok} ok, {self.failed} failed",
            *self.failure_lines(),
            *filter(None, [self.state_line()]),
            *([f"subtitles shortened to fit the {self.prompt_tokens}-token prompt: {self.shortened} rows "
               "(their subtitle_cut column says by how many tokens)"] if self.shortened else []),
            self.time_line(),
        ]


def provenance_lines(provenance: dict) -> list[str]:
    """The summary's lines of a table's provenance: the weights' source and the exact decoding settings."""
    model, d = provenance.get("model") or {}, provenance.get("decoding") or {}
    if not d:
        return []
    source = model.get("source_format", "")
    if model.get("source_sha256"):
        source += f" {model.get('source_file', '')} sha256 {model['source_sha256']}"
    budgets = ", ".join(f"{t} {n}" for t, n in (d.get("max_new_tokens") or {}).items())
    how = (f"sampling (temperature {d['temperature']:g}, top-p {d['top_p']:g}, top-k {d['top_k']}, "
           f"repetition penalty {d['repetition_penalty']:g})" if d.get("do_sample") else "greedy")
    return [f"weights: {source}",
            f"decoding: {d.get('decoding')}: {how}; max new tokens {budgets}; prompt {d.get('max_prompt_tokens')} "
            f"tokens; dtype {d.get('dtype')}; backend {d.get('backend')}; seed {d.get('seed')}"]


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


def label(request: LabelRequest, *, progress: Callable[[int, int | None], None] | None = None,
          on_batch: Callable[[int], None] | None = None) -> LabelSummary:
    """Label ``request.input`` (or its ``rows``) with its model into ``request.out``; resumable. Joins or starts Ray.

    ``progress(n, todo)`` is called after each block of output rows is written, with ``n`` samples
    labeled in it and ``todo`` the samples this run labels (None while streaming WebDataset shards);
    ``on_batch(rows)`` then too, with the block's row count (benches).
    """
    import ray

    from core.runtime import init_ray

    run = _LabelRun(request)  # every check before Ray starts, a model loads or a video is decoded
    init_ray(request.cfg)
    ctx = ray.data.DataContext.get_current()
    saved_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # same batches every run, so seeded outputs repeat
    try:
        ds = run.dataset()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy") if ds is not None else ():
            samples, rows = run.write(batch)
            if on_batch is not None:
                on_batch(rows)
            if progress is not None:
                progress(samples, run.todo())
    finally:
        ctx.execution_options.preserve_order = saved_order
    return run.finish()


class _LabelRun:
    """One labeling run, resolved: the asks, the model, what the table already holds, the writer and the summary."""

    def __init__(self, request: LabelRequest):
        from core.errors import ModelRefError
        from core.tracking import tracking_uri
        from modeling.sampling import DecodingSettings
        from registry.resolve import resolve_model

        self.t0 = time.perf_counter()
        self.request = req = request
        cfg = req.cfg
        self.lc = lc = cfg.label
        lc.validate()
        asks = resolve_asks(lc.task, lc.question, lc.labels, lc.valence_range)
        self.tasks, self.questions = [t for t, _ in asks], dict(asks)
        out = req.out
        if out.suffix not in (".parquet", ".csv"):
            raise InputError(f"--out {out}: the output must end in .parquet or .csv")
        require_writable(out, "--out", folder=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.kind = "rows" if req.rows is not None else detect_input(req.input, req.layout)
        if self.kind not in KINDS:
            raise InputError(f"--layout {self.kind!r} is not one of store, mer2025, folder, webdataset")
        uri = tracking_uri(cfg.mlflow.tracking_uri)
        try:
            self.resolved = resolve_model(req.model, tracking_uri=uri, llm_path=req.llm_path,
                                          check_timeout=cfg.mlflow.check_timeout_s)
        except ModelRefError as exc:
            raise InputError(str(exc)) from None
        self.spec = read_spec(self.resolved.checkpoint)
        base = Path(self.resolved.llm_path or self.spec.get("llm_path") or "")
        if not (base / "config.json").is_file():  # fail here, not in every actor's constructor
            raise InputError(f"base LLM {base} of model {req.model} not found (config.json missing): pass "
                              "--llm-path DIR or set $AFFECTFLOW_BASE_LLM")
        self.summary = LabelSummary(out=str(out), input=str(req.input if req.rows is None else f"{len(req.rows)} rows"),
                                    kind=self.kind, model_uri=self.resolved.model_uri,
                                    model_version=self.resolved.version, tasks=self.tasks,
                                    question=lc.question.strip(), prompt_tokens=lc.max_prompt_tokens)
        self.done = done_pairs(existing(out), req.retry_failed, self.questions)
        self.base, self.asks, self.uri = base, asks, uri
        self.settings = DecodingSettings.from_config(lc)
        self.provenance: dict = {}
        self.stage: StageSpec | None = None
        self.writer = PartWriter(out)
        self.seen: set[str] = set()

    def resolve_decoding(self) -> None:
        """The exact settings the actors decode with, resolved once here (the device the actors get, the LLM's
        generation_config, the checkpoint's precision) and recorded as the table's provenance; a table made
        with other settings is refused before any model loads. Needs Ray (the cluster's GPUs)."""
        from modeling.checkpoint import pick_dtype
        from modeling.generate import decoding_record
        from modeling.sampling import llm_defaults

        lc, req = self.lc, self.request
        device = lc.device if lc.device != "auto" else ("cuda" if _gpus(lc) > 0 else "cpu")
        gen = self.settings.resolve(llm_defaults(self.base), device)
        dtype = pick_dtype(self.settings.dtype, self.spec, device)
        run = {"model": self.resolved.provenance(),
               "decoding": decoding_record(gen, self.settings.decoding, dtype, req.cfg.seed, self.tasks)}
        self.provenance = recorded_provenance(req.out, run)
        self.summary.provenance = self.provenance
        self.writer.provenance = self.provenance
        visual_key = "visual" if self.kind == "store" else self.spec.get("visual_stream", "face")
        self.stage = StageSpec(self.resolved.to_dict(), self.asks, dataclasses.asdict(gen), req.cfg.seed, visual_key,
                               tracking_uri=self.uri, device=device, dtype=dtype, torch_threads=lc.torch_threads)

    def pending(self, name: str) -> bool:
        """Whether ``name`` has a task this run asks that the table does not hold yet."""
        return any((name, t) not in self.done for t in self.tasks)

    def finished_names(self) -> set[str]:
        """The names the resume filter drops: every task asked is in the table already."""
        return {n for n, _ in self.done if not self.pending(n)}

    def todo(self) -> int | None:
        return self.summary.total - self.summary.skipped if self.summary.total >= 0 else None

    def dataset(self):
        """The input as a stream of output rows, None when nothing is left to label: one branch per input kind."""
        req, kind, limit = self.request, self.kind, self.request.limit
        self.resolve_decoding()
        if kind == "store":
            return self._from_store()
        plan_ = self._plan()  # the encoders are checked before any media is read
        if kind == "webdataset":
            from pipelines.manifest import read_webdataset

            source = read_webdataset(req.input)
            source = source.limit(limit) if limit is not None else source
            self.summary.total = -1  # counted while streaming
            return self._from_media(operators.skip_names(source, self.finished_names(), plan_.cfg.read_cpus), plan_)
        if kind == "rows":
            rows = req.rows
        else:  # mer2025, folder
            from pipelines.manifest import read_manifest

            rows = read_manifest(Path(req.input), kind, follow_symlinks=plan_.cfg.follow_symlinks)
        return self._from_rows(rows, plan_)

    def _plan(self):
        cfg, req = self.request.cfg, self.request
        p = cfg.preprocess
        p = dataclasses.replace(p, layout=self.kind if self.kind != "rows" else p.layout,
                                faces=req.faces or ("opencv" if self.kind == "folder" else p.faces))
        p.validate()
        return plan_encoders(dataclasses.replace(cfg, preprocess=p), req.models, self.spec)

    def _from_rows(self, rows: Sequence, plan_):
        from pipelines.manifest import unique_by_name

        limit = self.request.limit
        items = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in unique_by_name(rows)]
        items = items[: limit if limit is not None else None]
        self.summary.total = len(items)
        items = operators.skip_names(items, self.finished_names(), plan_.cfg.read_cpus)
        self.summary.skipped = self.summary.total - len(items)
        return self._from_media(operators.source(items, self.lc.batch_size), plan_) if items else None

    def _from_media(self, source, plan_):
        """decode -> CLIP -> HuBERT [-> Whisper] -> label, no store; under preprocessing's object-store budget."""
        operators.object_store_budget(plan_.cfg.object_store_mb)
        ds = operators.decode(source, plan_.cfg, self.lc.batch_size)
        ds = operators.encode(ds, plan_, self.lc.batch_size)
        return operators.label(ds, LabelStage, (self.stage,), {}, self.lc, _gpus(self.lc))

    def _from_store(self):
        """The store path: failed samples become failed rows here; ok ones stream to the actor pool."""
        from core.errors import StoreError
        from features.store import FeatureStore

        store, spec, limit = self.request.input, self.spec, self.request.limit
        fs = FeatureStore(str(store))
        try:
            visual, audio = fs.resolve([spec.get("visual_stream", "face"), "audio"])
        except StoreError as exc:
            raise InputError(str(exc)) from None
        for s, want in ((visual, spec["visual_dim"]), (audio, spec["audio_dim"])):
            if s.dim != want:
                raise InputError(f"{store}: the {s.label()} features are {s.dim}-d but the model expects {want}-d")
        failed = fs.failed([visual, audio])
        names = sorted(set(fs.done_names([visual, audio])) | set(failed))[: limit if limit is not None else None]
        self.summary.total = len(names)
        todo = [n for n in names if self.pending(n)]
        self.summary.skipped = self.summary.total - len(todo)
        rows = [(n, t) for n in todo if n in failed for t in self.questions if (n, t) not in self.done]
        if rows:
            n_rows = len(rows)
            cols = {"name": [n for n, _ in rows], "task": [t for _, t in rows],
                    "question": [self.questions[t] for _, t in rows], "subtitle_cut": [0] * n_rows,
                    "text": [""] * n_rows, "labels": [None] * n_rows,
                    "model_uri": [self.resolved.model_uri] * n_rows, "model_version": [self.resolved.version] * n_rows,
                    "status": [FAILED] * n_rows, "error": [failed[n] for n, _ in rows]}
            self.writer.write(cols)
            self.summary.count(cols["status"], cols["error"])
        good = [n for n in todo if n not in failed]
        if not good:
            return None
        ds = operators.read_store(fs, visual=visual.modality, specs=[visual, audio], names=good,
                                  rows_per_block=self.lc.batch_size)  # written per batch, not per stored part
        return operators.label(ds, LabelStage, (self.stage,), {}, self.lc, _gpus(self.lc))

    def write(self, batch: dict) -> tuple[int, int]:
        """Write one block of output rows (the tasks the table lacks) as a part; ``(samples, rows)`` in it."""
        keep = [i for i, (n, t) in enumerate(zip(batch["name"], batch["task"])) if (str(n), str(t)) not in self.done]
        cols = {c: [batch[c][i] for i in keep] for c in COLUMNS}
        self.writer.write(cols)
        samples = len(set(cols["name"]))
        if samples:
            self.summary.first_part(samples, self.t0)
        self.summary.count(cols["status"], cols["error"])
        self.summary.shortened += sum(1 for c in cols["subtitle_cut"] if int(c) > 0)
        self.seen.update(cols["name"])
        return samples, len(cols["name"])

    def finish(self) -> LabelSummary:
        """Merge the parts into the table and fill in the summary's counts and the table's state."""
        s, out = self.summary, self.request.out
        if s.total < 0:  # streamed input: counted while streaming
            s.skipped = len(self.finished_names())
            s.total = s.skipped + len(self.seen)
        s.rows = finish(out, self.provenance)
        table = read_table(out).select(["name", "task", "status", "error"]).to_pylist()
        failed = [r for r in table if r["status"] != "ok"]
        s.state_ok, s.state_failed = len(table) - len(failed), len(failed)
        s.state_examples = [(f"{r['name']} ({r['task']})", r["error"]) for r in failed[:STATE_EXAMPLES]]
        s.seconds = time.perf_counter() - self.t0
        return s
