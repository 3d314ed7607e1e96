"""The preprocessing job: manifest -> decode -> CLIP -> HuBERT [-> ASR] -> feature store, one Ray Data stream.

A job is a :class:`PreprocessRequest` (built by the command from the config and its flags). The
stream is chained from `pipelines.operators`. Resume: the specs of this run are computed up front,
`FeatureStore.pending` names the samples already stored (or failed, unless ``retry_failed``),
`operators.skip_names` drops them, and each written batch is one part that becomes visible only
when complete, so a killed run loses at most its in-flight batches.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import numpy as np

from core.config import Config, load_config
from core.errors import InputError, MissingFileError
from core.paths import absolute, require_writable
from core.runtime import init_ray
from pipelines import operators
from pipelines.summary import STATE_EXAMPLES, JobSummary


@dataclass(frozen=True)
class PreprocessRequest:
    """One preprocessing job, as the command built it from the config and its flags (paths made absolute here).

    ``cfg`` gives the media and encoder settings (``preprocess.*``), the store's dtype (``store.*``),
    ``paths.models`` and Ray (``ray.*``); ``layout``/``faces`` given here win over ``preprocess.*``.
    """

    corpus: str | Path  # corpus root (mer2025/folder), or WebDataset shards (a folder, a .tar or a URL)
    store: str | Path  # the feature store: a path or an fsspec URL (s3://bucket/store.zarr)
    cfg: Config = field(default_factory=load_config)
    layout: str | None = None  # mer2025, folder or webdataset; None: preprocess.layout
    models: Path | None = None  # holds clip/, hubert/ (and whisper/ with preprocess.asr); None: paths.models
    faces: str | None = None  # openface, opencv or pyfeat; None: preprocess.faces
    limit: int | None = None  # only the first N manifest rows
    retry_failed: bool = False  # redo samples recorded as failed
    storage_options: dict | None = None  # fsspec options for the store (and a URL corpus)

    def __post_init__(self) -> None:
        for name in ("corpus", "store", "models"):
            object.__setattr__(self, name, absolute(getattr(self, name)))


@dataclass(kw_only=True)
class PreprocessSummary(JobSummary):
    """What one preprocessing run did (`JobSummary`: total = manifest rows after --limit, skipped =
    already stored, done or failed without --retry-failed), plus the specs written and face fallbacks."""

    store: str
    face_fallback: int = 0  # frames where the face detector found nothing and the frame was used
    specs: list[str] = field(default_factory=list)
    unit: ClassVar[str] = "videos"
    holder: ClassVar[str] = "store"

    @property
    def videos_per_s(self) -> float:
        return self.per_s

    @property
    def steady_videos_per_s(self) -> float:
        """Rate after the first part (start-up excluded); 0 when there was one part or none."""
        return self.steady_per_s

    def lines(self) -> list[str]:
        lines = [
            f"store: {self.store}",
            f"specs: {', '.join(self.specs) or '-'}",
            f"samples: {self.total} in manifest, {self.skipped} already stored (skipped), {self.processed} processed",
            f"ok: {self.ok}",
            f"failed: {self.failed} ({100 * self.failure_rate:.2f}%)",
            *self.failure_lines(),
            *filter(None, [self.state_line()]),
        ]
        if self.face_fallback:
            lines.append(f"face fallback (no face found, whole frame used): {self.face_fallback} frames")
        lines.append(self.time_line())
        return lines


@dataclass
class Plan:
    """Resolved inputs of a run: checkpoints, the specs to write and the stage settings."""

    clip: Path
    hubert: Path
    whisper: Path | None
    specs: list  # EncoderSpec, one per modality this run writes
    cfg: Any  # PreprocessConfig



def plan(cfg, models: str | Path | None = None) -> Plan:
    """Resolve checkpoints (``--models`` or ``paths.models``) and build the encoder specs."""
    from pipelines.encoders import clip_specs, hubert_spec

    p = cfg.preprocess
    root = Path(models or cfg.paths.models)
    dirs = {}
    for key, explicit in (("clip", p.clip_model), ("hubert", p.hubert_model)):
        d = Path(explicit) if explicit else root / key
        if not (d / "config.json").is_file():
            raise InputError(f"{key} checkpoint not found: {d} has no config.json "
                              f"(pass --models DIR holding clip/ and hubert/, or --set preprocess.{key}_model=PATH)")
        dirs[key] = d
    whisper = None
    if p.asr:
        whisper = Path(p.whisper_model) if p.whisper_model else root / "whisper"
        if not (whisper / "config.json").is_file():
            raise InputError(f"preprocess.asr is on but the Whisper checkpoint {whisper} has no config.json "
                              "(--set preprocess.whisper_model=PATH)")
    if p.layout == "folder" and p.faces == "openface":
        raise InputError("a folder of videos has no OpenFace stacks: use --faces opencv (or pyfeat)")
    if p.faces == "opencv":
        from pipelines.faces import haar_available

        if haar_available():
            raise InputError(f"faces=opencv: {haar_available()}")
    if p.faces == "pyfeat" and not p.pyfeat_model:
        raise InputError("faces=pyfeat needs a local py-feat model directory: --set preprocess.pyfeat_model=PATH")
    dtype = "float32" if cfg.store.dtype == "float32" else "float16"
    frame, face = clip_specs(dirs["clip"], p.faces, p.num_frames, p.image_size, dtype)
    audio = hubert_spec(dirs["hubert"], p.sample_rate, p.num_clips, p.clip_seconds, dtype)
    return Plan(dirs["clip"], dirs["hubert"], whisper, [frame, face, audio], p)


def build_dataset(source, plan_: Plan, store: str, storage_options: dict | None):
    """Chain the operators: decode (CPU actors) -> encoders -> write, under the object-store budget."""
    p = plan_.cfg
    operators.object_store_budget(p.object_store_mb)
    ds = operators.decode(source, p, p.batch_size, storage_options)
    ds = operators.encode(ds, plan_, p.batch_size)
    return operators.write(ds, store, plan_.specs, storage_options, p)


def _select_specs(fs, names: list[str], specs: list, retry_failed: bool) -> tuple[list, list[str]]:
    """The specs with anything left to compute, and the names pending in any of them (in manifest order)."""
    todo_specs, pending = [], set()
    for spec in specs:
        left = fs.pending(names, [spec], retry_failed=retry_failed)
        if left:
            todo_specs.append(spec)
            pending.update(left)
    return todo_specs, [n for n in names if n in pending]


def _tally(summary: PreprocessSummary, batches: Iterable[dict[str, np.ndarray]], t0: float,
           progress: Callable[[int, int | None], None] | None = None) -> None:
    todo = summary.total - summary.skipped if summary.total >= 0 else None
    for b in batches:
        summary.first_part(len(b["status"]), t0)
        summary.count(b["status"], b["error"])
        summary.face_fallback += int(np.sum(b["face_fallback"]))
        if progress is not None:
            progress(len(b["status"]), todo)


def preprocess(request: PreprocessRequest,
               progress: Callable[[int, int | None], None] | None = None) -> PreprocessSummary:
    """Preprocess ``request.corpus`` into the feature store at ``request.store``; resumable, per-sample
    failures recorded. Joins or starts Ray (`init_ray`).
    ``progress(n, todo)`` is called after each written part: ``n`` samples done in it, ``todo`` the
    samples this run processes (None while streaming WebDataset shards, whose count is unknown).
    """
    from features.store import FeatureStore
    from pipelines.manifest import read_manifest, read_webdataset, unique_by_name

    corpus, limit, storage_options = request.corpus, request.limit, request.storage_options
    p = request.cfg.preprocess
    p = dataclasses.replace(p, layout=request.layout or p.layout, faces=request.faces or p.faces)
    p.validate()
    cfg = dataclasses.replace(request.cfg, preprocess=p)
    require_writable(request.store, "--store", folder=True)  # before any decoding
    plan_ = plan(cfg, request.models)
    store = str(request.store)
    fs = FeatureStore(store, storage_options)
    summary = PreprocessSummary(store=store)
    t0 = time.perf_counter()

    if p.layout == "webdataset":
        init_ray(cfg)
        source = read_webdataset(corpus, storage_options, num_cpus=p.read_cpus)
        if limit is not None:
            source = source.limit(limit)
        # Names are known only while streaming: skip stored ones in the stream.
        skip = fs.done_names(plan_.specs)
        if not request.retry_failed:
            skip |= set(fs.failed(plan_.specs))
        summary.total = -1
        source = operators.skip_names(source, skip, p.read_cpus)
        todo = plan_
    else:
        # An fsspec URL corpus (s3://...) shares the store's storage_options.
        remote = "://" in str(corpus)
        if not remote and not Path(corpus).exists():
            raise MissingFileError(f"corpus {corpus} does not exist")
        rows = read_manifest(str(corpus) if remote else Path(corpus), p.layout, storage_options,
                             follow_symlinks=p.follow_symlinks)[: limit if limit is not None else None]
        # Two rows with one name (e.g. a bad CSV row and the real video) cannot share a part.
        rows = unique_by_name(rows)
        summary.total = len(rows)
        names = [r.name for r in rows]
        specs, pending = _select_specs(fs, names, plan_.specs, request.retry_failed)
        summary.skipped = len(rows) - len(pending)
        summary.specs = [s.label() for s in specs]
        if not pending:
            _store_state(summary, fs, plan_.specs)
            summary.seconds = time.perf_counter() - t0
            return summary
        todo = dataclasses.replace(plan_, specs=specs)
        # Parts left uncommitted by a killed run are garbage once we start writing again.
        fs.vacuum()
        items = operators.skip_names([r.to_dict() for r in rows], set(names) - set(pending), p.read_cpus)
        init_ray(cfg)
        source = operators.source(items, p.batch_size)
        # The rows now live in the object store: the driver's copies (~1 KB a row, 100+ MB at
        # 132k rows) would only sit in its memory for the whole run.
        del rows, names, pending, items
    summary.specs = [s.label() for s in todo.specs]
    ds = build_dataset(source, todo, store, storage_options)
    _tally(summary, ds.iter_batches(batch_size=None, batch_format="numpy"), t0, progress)
    if summary.total < 0:
        summary.total = summary.processed + len(skip)
        summary.skipped = len(skip)
    _store_state(summary, fs, plan_.specs)
    summary.seconds = time.perf_counter() - t0
    return summary


def _store_state(summary: PreprocessSummary, fs, specs) -> None:
    """The store's whole state for this run's specs: samples ok in all of them, and failed in any."""
    failed = fs.failed(specs)
    summary.state_failed = len(failed)
    summary.state_ok = len(fs.done_names(specs) - set(failed))
    summary.state_examples = sorted(failed.items())[:STATE_EXAMPLES]
