"""Ray Data operators: the one module that turns stages into ``map_batches`` calls and actor pools.

Jobs (preprocessing in `pipelines.job`, batch labeling in `inference.labeling`) chain these;
stages stay plain callables that know nothing of Ray. Resource settings live here with their
reasons: on a 2-CPU box every actor takes a fraction of a CPU or the job stalls.
"""

from __future__ import annotations

from typing import Any, Sequence


def source(items: list[dict], batch_size: int):
    """Manifest rows as a Ray Dataset of ``batch_size``-row blocks: one block per decode batch.

    A decode task turns its input block into one output block of decoded media (~3.4 MB a
    sample). Blocks of many batches (e.g. 66 rows when 132k rows were capped at 2,000 blocks)
    made each decode worker assemble ~230 MB blocks in its heap and held them in the object
    store, +0.7 GiB at the peak; a block per batch keeps that to one batch.
    """
    import ray

    return ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // batch_size)))


def skip_names(source, names: set[str], num_cpus: float):
    """The resume filter of every job: ``source`` without the rows whose ``name`` is in ``names``.

    ``source`` is a list of row dicts (a manifest, known up front) or a Ray Dataset of rows
    (WebDataset shards, whose names are known only while streaming); ``num_cpus`` is the filter
    task's share of a CPU there: whole-CPU tasks stall beside the actor pools on 2 cores.
    """
    if not names:
        return source
    if isinstance(source, list):
        return [row for row in source if row["name"] not in names]
    return source.filter(lambda row: row["name"] not in names, num_cpus=num_cpus)


def object_store_budget(mb: int) -> None:
    """Cap the object-store bytes Ray Data keeps in flight (decoded frames queue between stages); 0 = Ray's default."""
    if not mb:
        return
    from ray.data import DataContext

    opts = DataContext.get_current().execution_options
    opts.resource_limits = opts.resource_limits.copy(object_store_memory=mb * 2**20)


def decode(ds, p, batch_size: int, storage_options: dict | None = None):
    """Add the decode operator (`DecodeStage`, CPU actors) for `PreprocessConfig` ``p``.

    The pool starts with one actor and may grow to ``p.decode_actors`` (why one by default:
    the note on ``decode_actors`` in `PreprocessConfig`).
    """
    from ray.data import ActorPoolStrategy

    from pipelines.stages import DecodeStage

    return ds.map_batches(
        DecodeStage, fn_constructor_args=(p,), fn_constructor_kwargs={"storage_options": storage_options},
        batch_size=batch_size,
        compute=ActorPoolStrategy(min_size=1, max_size=p.decode_actors), num_cpus=p.decode_cpus,
    )


def encode(ds, plan, batch_size: int):
    """Add the encoder operators to ``ds``: CLIP and HuBERT (one fused pool or a pool each) [-> Whisper].

    ``plan``: a `pipelines.job.Plan` (checkpoints, the specs to write, ``cfg`` = `PreprocessConfig`).
    """
    from ray.data import ActorPoolStrategy

    from pipelines.encoders import ClipEncoder, FusedEncoder, HubertEncoder, WhisperASR

    p = plan.cfg
    modalities = {s.modality for s in plan.specs}
    enc = dict(device=p.device, dtype=p.dtype, torch_threads=p.torch_threads)
    enc_res = dict(num_cpus=p.encoder_cpus, num_gpus=p.encoder_gpus or None)
    pool = dict(batch_size=batch_size, compute=ActorPoolStrategy(size=p.encoder_actors), **enc_res)
    if p.encoder_pools == "fused":
        args = (str(plan.clip), str(plan.hubert), tuple(sorted(modalities)))
        ds = ds.map_batches(FusedEncoder, fn_constructor_args=args, fn_constructor_kwargs=enc, **pool)
    else:
        if modalities & {"frame", "face"}:
            ds = ds.map_batches(ClipEncoder, fn_constructor_args=(str(plan.clip),), fn_constructor_kwargs=enc, **pool)
        if "audio" in modalities:
            ds = ds.map_batches(HubertEncoder, fn_constructor_args=(str(plan.hubert),), fn_constructor_kwargs=enc,
                                **pool)
    if plan.whisper is not None:
        # Half the encoder share: with ASR on, 2 decode actors + 3 encoders + writer still fit 2 CPUs.
        asr_res = {**enc_res, "num_cpus": p.encoder_cpus / 2}
        ds = ds.map_batches(WhisperASR, fn_constructor_args=(str(plan.whisper),), fn_constructor_kwargs=enc,
                            batch_size=batch_size, compute=ActorPoolStrategy(size=1), **asr_res)
    return ds


def write(ds, store: str, specs: Sequence, storage_options: dict | None, p):
    """Add the store writer (`WriteStage`, one actor): each ``p.write_batch_size`` batch becomes one part."""
    from ray.data import ActorPoolStrategy

    from pipelines.stages import WriteStage

    return ds.map_batches(
        WriteStage, fn_constructor_args=(store, [s.to_json() for s in specs], storage_options),
        batch_size=p.write_batch_size, compute=ActorPoolStrategy(size=1), num_cpus=p.writer_cpus,
    )


def label(ds, stage_cls: type, args: tuple, kwargs: dict[str, Any], lc, num_gpus: float):
    """Add the labeling operator: ``lc.actors`` actors of ``stage_cls`` (the model held once per actor).

    ``stage_cls`` is passed in (`inference.label_stage.LabelStage`): it belongs to a higher layer.
    ``lc``: a `LabelConfig`; ``num_gpus`` per actor, 0 for none.
    """
    from ray.data import ActorPoolStrategy

    return ds.map_batches(stage_cls, fn_constructor_args=args, fn_constructor_kwargs=kwargs,
                          batch_size=lc.batch_size, compute=ActorPoolStrategy(size=lc.actors),
                          num_cpus=lc.actor_cpus, num_gpus=num_gpus or None)


def read_store(store, labels=None, visual: str = "face", specs: Any = None, names=None,
               require_labels: bool = False, storage_options: dict | None = None, rows_per_block: int = 0):
    """A Ray Dataset of the FeatureDataset rows (float32 numpy features), one stored part per read task.

    ``store``: a path/URL or a `FeatureStore`; the other arguments select rows as
    `features.reader.read_tasks` does. Workers read the feature chunks, not the driver.
    ``rows_per_block`` (> 0): a read task per that many rows instead, so a downstream actor pool with
    that batch size finishes (and a job writes) one block per batch: labeling a one-part store would
    otherwise emit its first output only at the end, and an interrupt lose it all.
    """
    import json

    import ray.data

    from features.reader import read_task, read_tasks
    from features.store import FeatureStore

    fstore = store if isinstance(store, FeatureStore) else FeatureStore(store, storage_options)
    tasks = read_tasks(fstore, labels, visual, specs, names, require_labels)
    if rows_per_block > 0:  # across parts: a read task may read rows of two parts, as read_task allows
        rows = [json.loads(t["task"]) for t in tasks]
        whole = {k: [v for task in rows for v in task[k]] for k in rows[0]}
        tasks = [{"task": json.dumps({k: v[i:i + rows_per_block] for k, v in whole.items()})}
                 for i in range(0, len(whole["name"]), rows_per_block)]
    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))
    return ds.map_batches(
        read_task,
        batch_size=1,
        fn_kwargs={"path": fstore.path, "storage_options": fstore.storage_options},
    )
