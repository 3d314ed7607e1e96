"""The preprocessing job: manifest -> decode -> CLIP -> HuBERT [-> ASR] -> feature store, one Ray Data stream.

This is the only module that turns stages into ``map_batches`` calls. Resume: the specs of
this run are computed up front, `FeatureStore.pending` drops samples already stored (or
failed, unless ``retry_failed``), and each written batch is one part that becomes visible
only when complete, so a killed run loses at most its in-flight batches.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from core.errors import InputError, MissingFileError
from core.errors import error_kind
from core.runtime import init_ray


@dataclass
class PreprocessSummary:
    """What one run did: counts, failures by kind (with one example each), speed."""

    store: str
    total: int = 0  # manifest rows considered (after --limit)
    skipped: int = 0  # already in the store (done, or failed without --retry-failed)
    ok: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    face_fallback: int = 0  # frames where the face detector found nothing and the frame was used
    seconds: float = 0.0
    first_part_s: float = 0.0  # until the first part was written: Ray and actor start-up, model loads
    first_part_n: int = 0  # samples in that first part
    specs: list[str] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.ok + self.failed

    @property
    def failure_rate(self) -> float:
        return self.failed / self.processed if self.processed else 0.0

    @property
    def videos_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_videos_per_s(self) -> float:
        """Rate after the first part (start-up excluded); 0 when there was one part or none."""
        rest = self.seconds - self.first_part_s
        return (self.processed - self.first_part_n) / rest if rest > 0 and self.first_part_n else 0.0

    def format(self) -> str:
        lines = [
            f"store: {self.store}",
            f"specs: {', '.join(self.specs) or '-'}",
            f"samples: {self.total} in manifest, {self.skipped} already stored (skipped), {self.processed} processed",
            f"ok: {self.ok}",
            f"failed: {self.failed} ({100 * self.failure_rate:.2f}%)",
        ]
        for kind, count in sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {kind}: {count}   e.g. {self.examples.get(kind, '')[:160]}")
        if self.face_fallback:
            lines.append(f"face fallback (no face found, whole frame used): {self.face_fallback} frames")
        steady = f"; after start-up ({self.first_part_s:.1f}s) {self.steady_videos_per_s:.2f} videos/s" \
            if self.steady_videos_per_s else ""
        lines.append(f"time: {self.seconds:.1f}s, {self.videos_per_s:.2f} videos/s{steady}")
        return "\n".join(lines)


class WriteStage:
    """Writes each batch as one store part; returns the summary columns (name, status, error, face_fallback)."""

    def __init__(self, store: str, specs_json: Sequence[str], storage_options: dict | None = None):
        from features.spec import EncoderSpec
        from features.store import FeatureStore

        self.store = FeatureStore(store, storage_options)
        self.specs = [EncoderSpec.from_json(s) for s in specs_json]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = {"name", "subtitle", "status", "error", *(s.modality for s in self.specs)}
        names = [str(n) for n in batch["name"]]
        if len(set(names)) != len(names):
            # A key repeated within one batch (two shards holding one sample): a part holds a
            # name once, so the first copy is stored and the rest dropped.
            first = np.array([names.index(n) == i for i, n in enumerate(names)])
            batch = {k: np.asarray(v)[first] for k, v in batch.items()}
        summary = self.store.write_part(self.specs, {k: v for k, v in batch.items() if k in keep})
        return {**{k: np.asarray(v, dtype=object) for k, v in summary.items()},
                "face_fallback": np.asarray(batch.get("face_fallback", np.zeros(len(batch["name"]))), np.int32)}


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


def decode_kwargs(p) -> dict[str, Any]:
    """`DecodeStage` arguments from a `PreprocessConfig`."""
    return dict(faces=p.faces, num_frames=p.num_frames, image_size=p.image_size, sample_rate=p.sample_rate,
                num_clips=p.num_clips, clip_seconds=p.clip_seconds, pyfeat_model=p.pyfeat_model or None,
                asr=p.asr)


def items_source(items: list[dict], batch_size: int):
    """Manifest rows as a Ray Dataset of ``batch_size``-row blocks: one block per decode batch.

    A decode task turns its input block into one output block of decoded media (~3.4 MB a
    sample). Blocks of many batches (e.g. 66 rows when 132k rows were capped at 2,000 blocks)
    made each decode worker assemble ~230 MB blocks in its heap and held them in the object
    store, +0.7 GiB at the peak; a block per batch keeps that to one batch.
    """
    import ray

    return ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // batch_size)))


def encode_ops(ds, plan_: Plan, batch_size: int):
    """Add the encoder operators to ``ds``: CLIP and HuBERT (one fused pool or a pool each) [-> Whisper]."""
    from ray.data import ActorPoolStrategy

    from pipelines.encoders import ClipEncoder, FusedEncoder, HubertEncoder, WhisperASR

    p = plan_.cfg
    modalities = {s.modality for s in plan_.specs}
    enc = dict(device=p.device, dtype=p.dtype, torch_threads=p.torch_threads)
    enc_res = dict(num_cpus=p.encoder_cpus, num_gpus=p.encoder_gpus or None)
    pool = dict(batch_size=batch_size, compute=ActorPoolStrategy(size=p.encoder_actors), **enc_res)
    if p.encoder_pools == "fused":
        ds = ds.map_batches(FusedEncoder, fn_constructor_args=(str(plan_.clip), str(plan_.hubert), tuple(sorted(modalities))),
                            fn_constructor_kwargs=enc, **pool)
    else:
        if modalities & {"frame", "face"}:
            ds = ds.map_batches(ClipEncoder, fn_constructor_args=(str(plan_.clip),), fn_constructor_kwargs=enc, **pool)
        if "audio" in modalities:
            ds = ds.map_batches(HubertEncoder, fn_constructor_args=(str(plan_.hubert),), fn_constructor_kwargs=enc,
                                **pool)
    if plan_.whisper is not None:
        # Half the encoder share: with ASR on, 2 decode actors + 3 encoders + writer still fit 2 CPUs.
        asr_res = {**enc_res, "num_cpus": p.encoder_cpus / 2}
        ds = ds.map_batches(WhisperASR, fn_constructor_args=(str(plan_.whisper),), fn_constructor_kwargs=enc,
                            batch_size=batch_size, compute=ActorPoolStrategy(size=1), **asr_res)
    return ds


def build_dataset(source, plan_: Plan, store: str, storage_options: dict | None):
    """Chain the stages as Ray Data operators: decode (CPU actors) -> encoders (`encode_ops`) -> write."""
    from ray.data import ActorPoolStrategy

    from pipelines.stages import DecodeStage

    p = plan_.cfg
    if p.object_store_mb:
        from ray.data import DataContext

        opts = DataContext.get_current().execution_options
        opts.resource_limits = opts.resource_limits.copy(object_store_memory=p.object_store_mb * 2**20)
    ds = source.map_batches(
        DecodeStage, fn_constructor_kwargs={**decode_kwargs(p), "storage_options": storage_options},
        batch_size=p.batch_size,
        compute=ActorPoolStrategy(min_size=1, max_size=p.decode_actors), num_cpus=p.decode_cpus,
    )
    ds = encode_ops(ds, plan_, p.batch_size)
    return ds.map_batches(
        WriteStage, fn_constructor_args=(store, [s.to_json() for s in plan_.specs], storage_options),
        batch_size=p.write_batch_size, compute=ActorPoolStrategy(size=1), num_cpus=p.writer_cpus,
    )


def _select_specs(fs, names: list[str], specs: list, retry_failed: bool) -> tuple[list, list[str]]:
    """The specs with anything left to compute, and the names pending in any of them (in manifest order)."""
    todo_specs, pending = [], set()
    for spec in specs:
        left = fs.pending(names, [spec], retry_failed=retry_failed)
        if left:
            todo_specs.append(spec)
            pending.update(left)
    return todo_specs, [n for n in names if n in pending]


def _tally(summary: PreprocessSummary, batches: Iterable[dict[str, np.ndarray]], t0: float) -> None:
    kinds: Counter = Counter()
    for b in batches:
        if not summary.first_part_n:
            summary.first_part_s, summary.first_part_n = time.perf_counter() - t0, len(b["status"])
        for status, error in zip(b["status"], b["error"]):
            if status == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
                kind = error_kind(str(error)) or "unknown"
                kinds[kind] += 1
                summary.examples.setdefault(kind, str(error))
        summary.face_fallback += int(np.sum(b["face_fallback"]))
    summary.failures = dict(kinds)


def preprocess(corpus: str | Path, store: str | Path, layout: str | None = None, models: str | Path | None = None,
               faces: str | None = None, limit: int | None = None, cfg=None, retry_failed: bool = False,
               storage_options: dict | None = None) -> PreprocessSummary:
    """Preprocess ``corpus`` into the feature store at ``store``; resumable, per-sample failures recorded.

    ``layout``/``faces`` override ``cfg.preprocess``; ``models`` holds ``clip/``, ``hubert/``
    (and ``whisper/`` with ``preprocess.asr``). Joins or starts Ray (`init_ray`).
    """
    from core.config import load_config
    from features.store import FeatureStore
    from pipelines.manifest import read_manifest, read_webdataset

    cfg = cfg if cfg is not None else load_config()
    p = cfg.preprocess
    p = dataclasses.replace(p, layout=layout or p.layout, faces=faces or p.faces)
    p.validate()
    cfg = dataclasses.replace(cfg, preprocess=p)
    plan_ = plan(cfg, models)
    store = str(store)
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
        if not retry_failed:
            skip |= set(fs.failed(plan_.specs))
        summary.total = -1
        if skip:
            source = source.filter(lambda row: row["name"] not in skip, num_cpus=p.read_cpus)
        todo = plan_
    else:
        # An fsspec URL corpus (s3://...) shares the store's storage_options.
        remote = "://" in str(corpus)
        if not remote and not Path(corpus).exists():
            raise MissingFileError(f"corpus {corpus} does not exist")
        rows = read_manifest(str(corpus) if remote else Path(corpus), p.layout,
                             storage_options)[: limit if limit is not None else None]
        # Two rows with one name (e.g. a bad CSV row and the real video) cannot share a part.
        seen: set[str] = set()
        unique = []
        for r in rows:
            if r.name not in seen:
                seen.add(r.name)
                unique.append(r)
        rows = unique
        summary.total = len(rows)
        names = [r.name for r in rows]
        specs, pending = _select_specs(fs, names, plan_.specs, retry_failed)
        summary.skipped = len(rows) - len(pending)
        summary.specs = [s.label() for s in specs]
        if not pending:
            summary.seconds = time.perf_counter() - t0
            return summary
        todo = dataclasses.replace(plan_, specs=specs)
        # Parts left uncommitted by a killed run are garbage once we start writing again.
        fs.vacuum()
        keep = set(pending)
        items = [r.to_dict() for r in rows if r.name in keep]
        init_ray(cfg)
        source = items_source(items, p.batch_size)
        # The rows now live in the object store: the driver's copies (~1 KB a row, 100+ MB at
        # 132k rows) would only sit in its memory for the whole run.
        del rows, unique, seen, names, pending, keep, items
    summary.specs = [s.label() for s in todo.specs]
    ds = build_dataset(source, todo, store, storage_options)
    _tally(summary, ds.iter_batches(batch_size=None, batch_format="numpy"), t0)
    if summary.total < 0:
        summary.total = summary.processed + len(skip)
        summary.skipped = len(skip)
    summary.seconds = time.perf_counter() - t0
    return summary
