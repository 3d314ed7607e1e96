"""``affectflow demo``: the whole job on the embedded defaults, from tiny models to a MER-UniBench report."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from affectflow.commands.setup import synth_corpus, tiny_models
from affectflow.options import add_config_options, config_from_args
from core.console import current, echo, progress


def demo(cfg, n: int = 96, n_held_out: int = 24) -> dict:
    """The end-to-end job on the embedded defaults: models, corpus, features, training, registry,
    batch labeling of held-out videos, and a MER-UniBench report."""
    import shutil

    import ray

    from features.labels import read_corpus_labels
    from inference.benchmark import benchmark
    from inference.labeling import label
    from inference.table import read_table
    from scoring.wheel import resolve_wheel_dir
    from registry.register import log_and_register
    from pipelines.job import preprocess
    from training.trainer import train

    from synth.unibench import ALL_DATASETS, write_unibench

    t0 = time.perf_counter()
    # Absolute paths: Ray workers run in other directories.
    paths = dataclasses.replace(cfg.paths, **{k: str(Path(v).resolve()) for k, v in dataclasses.asdict(cfg.paths).items()})
    cfg = dataclasses.replace(cfg, paths=paths)
    runs = Path(paths.runs)
    made: dict = {}

    def step(msg: str) -> None:
        echo(f"[demo {time.perf_counter() - t0:6.1f}s] {msg}")

    current().announce()  # the log's path first: the stages below write there

    made["models"] = tiny_models(paths.models, seed=cfg.seed)
    step(f"tiny models -> {paths.models}")
    made["corpus"] = synth_corpus(paths.corpus, n=n, seed=cfg.seed)
    held_out = Path(paths.corpus + "-heldout")
    made["held_out"] = synth_corpus(held_out, n=n_held_out, seed=cfg.seed + 1)
    step(f"synthetic corpus -> {paths.corpus} ({made['corpus']}); held out -> {held_out}")

    with progress("preprocess", unit="videos") as bar:
        summary = preprocess(paths.corpus, paths.store, models=paths.models, cfg=cfg, progress=bar)
    step(f"feature store -> {paths.store}\n{summary.format()}")
    # Each stage gets a fresh local Ray: training in the session a Ray Data job has just used
    # ran ~5x slower here (the job's idle actors and executor threads still hold the 2 cores).
    ray.shutdown()

    out = runs / "demo-train"
    shutil.rmtree(out, ignore_errors=True)
    # The store holds the labels preprocessing read from the corpus: training needs no corpus root.
    with progress("train", unit="step") as bar:
        result = train(cfg, paths.store, None, out, models=paths.models, progress=bar.set,
                       on_finish=lambda ckpt, c: made.__setitem__("registered", log_and_register(ckpt, c)))
    losses = [h["loss"] for h in result.history]
    step(f"trained -> {result.checkpoint_dir} (loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps)"
         if losses else f"trained -> {result.checkpoint_dir}")
    ray.shutdown()
    registered = made.get("registered")
    model = registered.model_uri if registered is not None else result.checkpoint_dir
    step(f"model -> {model}")

    labels_out = runs / "demo-labels.parquet"
    labels_out.unlink(missing_ok=True)
    with progress("label", unit="videos") as bar:
        made["labels"] = label(held_out, model, task="ov", out=labels_out, cfg=cfg, models=paths.models,
                               progress=bar)
    table = read_table(labels_out).to_pandas()
    gold = read_corpus_labels(held_out).set_index("name")["openset"]
    first = lambda words: (list(words) or ["neutral"])[0]  # noqa: E731  (an empty list means neutral)
    hits = sum(first(row.labels if row.labels is not None else []) == first(gold.get(row.name, []))
               for row in table.itertuples())
    step(f"labeled {len(table)} held-out videos -> {labels_out}: first label right on {hits}/{len(table)} "
         f"(chance {len(table) / 6:.0f})")
    for row in table.head(3).itertuples():
        echo(f"    {row.name}: {row.text!r} -> {list(row.labels) if row.labels is not None else row.error}")

    wheel = resolve_wheel_dir(cfg.score.wheel_dir)
    if not (wheel / "format.csv").is_file():
        step(f"no emotion-wheel files at {wheel} (set score.wheel_dir): skipping the MER-UniBench report")
        return made
    unibench = Path(paths.corpus + "-unibench")
    # All nine sets, a few samples each (36 in all, about what five sets of 6 took); the sentiment
    # sets are scored by the valence rules, so no LLM extractor is needed.
    write_unibench(unibench, n_per_dataset=4, seed=cfg.seed, datasets=ALL_DATASETS)
    bench_out = runs / "demo-benchmark"
    with progress("label MER-UniBench", unit="samples") as bar:
        made["scores"] = benchmark(model, unibench, None, bench_out, seed=cfg.seed, cfg=cfg,
                                   encoders=paths.models, wheel_dir=wheel, progress=bar)
    step(f"MER-UniBench (synthetic) -> {bench_out}/scores.md")
    echo((bench_out / "scores.md").read_text(encoding="utf-8").rstrip("\n"))
    step(f"done; report -> {bench_out}/report.html")
    return made


def _cmd_demo(args: argparse.Namespace) -> int:
    demo(config_from_args(args), n=args.n)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end job on the embedded defaults")
    add_config_options(p)
    p.add_argument("--n", type=int, default=96, help="synthetic training corpus size (default 96)")
    p.set_defaults(func=_cmd_demo)
