"""The end-to-end demo on the embedded defaults: tiny models, a synthetic corpus, features, training,
the registry, batch labeling of held-out videos, and a MER-UniBench report on synthetic folders.

`affectflow demo` parses its flags and calls :func:`run_demo`; each step prints one line (and the
jobs' summaries) through `core.console`, with the seconds since the start.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from core.console import current, echo, progress


def run_demo(cfg, n: int = 96, n_held_out: int = 24) -> dict:
    """The whole job on ``cfg``'s paths: ``n`` training videos, ``n_held_out`` labeled ones. Returns what
    each step made (models, corpora, the registered model, the labeling summary, the scores)."""
    return _Demo(cfg, n, n_held_out).run()


def _first(words) -> str:
    """The first label of a list; an empty list means neutral."""
    return (list(words) or ["neutral"])[0]


class _Demo:
    def __init__(self, cfg, n: int, n_held_out: int):
        # Absolute paths: Ray workers run in other directories.
        paths = dataclasses.replace(cfg.paths, **{k: str(Path(v).resolve())
                                                   for k, v in dataclasses.asdict(cfg.paths).items()})
        self.cfg, self.paths = dataclasses.replace(cfg, paths=paths), paths
        self.n, self.n_held_out = n, n_held_out
        self.runs = Path(paths.runs)
        self.held_out = Path(paths.corpus + "-heldout")
        self.made: dict = {}
        self.t0 = time.perf_counter()

    def step(self, msg: str) -> None:
        echo(f"[demo {time.perf_counter() - self.t0:6.1f}s] {msg}")

    def run(self) -> dict:
        import ray

        current().announce()  # the log's path first: the stages below write there
        self.inputs()
        self.features()
        # Each stage gets a fresh local Ray: training in the session a Ray Data job has just used
        # ran ~5x slower here (the job's idle actors and executor threads still hold the 2 cores).
        ray.shutdown()
        model = self.train()
        ray.shutdown()
        self.label(model)
        self.benchmark(model)
        return self.made

    def inputs(self) -> None:
        from synth.corpus import write_corpus
        from synth.tiny_models import build_tiny_models

        paths, seed = self.paths, self.cfg.seed
        self.made["models"] = build_tiny_models(paths.models, seed=seed)
        self.step(f"tiny models -> {paths.models}")
        self.made["corpus"] = write_corpus(paths.corpus, n=self.n, seed=seed)
        self.made["held_out"] = write_corpus(self.held_out, n=self.n_held_out, seed=seed + 1)
        self.step(f"synthetic corpus -> {paths.corpus} ({self.made['corpus']}); held out -> {self.held_out}")

    def features(self) -> None:
        from pipelines.job import PreprocessRequest, preprocess

        paths = self.paths
        with progress("preprocess", unit="videos") as bar:
            summary = preprocess(PreprocessRequest(paths.corpus, paths.store, self.cfg, models=paths.models), bar)
        self.step(f"feature store -> {paths.store}\n{summary.format()}")

    def train(self) -> str:
        """Train on the store, register the checkpoint when training ends; the model's URI (or folder)."""
        from registry.register import log_and_register
        from training.trainer import TrainRequest, train

        out = self.runs / "demo-train"
        shutil.rmtree(out, ignore_errors=True)

        def register(ckpt, cfg) -> None:
            self.made["registered"] = log_and_register(ckpt, cfg)

        # The store holds the labels preprocessing read from the corpus: training needs no corpus root.
        with progress("train", unit="step") as bar:
            result = train(TrainRequest(self.cfg, self.paths.store, None, out, models=self.paths.models),
                           on_finish=register, progress=bar.set)
        losses = [h["loss"] for h in result.history]
        self.step(f"trained -> {result.checkpoint_dir} (loss {losses[0]:.3f} -> {losses[-1]:.3f} over "
                  f"{len(losses)} steps)" if losses else f"trained -> {result.checkpoint_dir}")
        registered = self.made.get("registered")
        model = registered.model_uri if registered is not None else result.checkpoint_dir
        self.step(f"model -> {model}")
        return model

    def label(self, model: str) -> None:
        """Label the held-out videos and count how often the first label is the corpus's."""
        from features.labels import read_corpus_labels
        from inference.labeling import LabelRequest, label
        from inference.table import read_table

        out = self.runs / "demo-labels.parquet"
        out.unlink(missing_ok=True)
        cfg = dataclasses.replace(self.cfg, label=dataclasses.replace(self.cfg.label, task="ov"))
        with progress("label", unit="videos") as bar:
            self.made["labels"] = label(LabelRequest(self.held_out, model, out, cfg, models=self.paths.models),
                                        progress=bar)
        table = read_table(out).to_pandas()
        gold = read_corpus_labels(self.held_out).set_index("name")["openset"]
        hits = sum(_first(row.labels if row.labels is not None else []) == _first(gold.get(row.name, []))
                   for row in table.itertuples())
        self.step(f"labeled {len(table)} held-out videos -> {out}: first label right on {hits}/{len(table)} "
                  f"(chance {len(table) / 6:.0f})")
        for row in table.head(3).itertuples():
            echo(f"    {row.name}: {row.text!r} -> {list(row.labels) if row.labels is not None else row.error}")

    def benchmark(self, model: str) -> None:
        """Score the model on synthetic MER-UniBench folders of all nine sets; print the table."""
        from inference.benchmark import BenchmarkRequest, benchmark
        from scoring.wheel import resolve_wheel_dir
        from synth.unibench import ALL_DATASETS, write_unibench

        wheel = resolve_wheel_dir(self.cfg.score.wheel_dir)
        if not (wheel / "format.csv").is_file():
            self.step(f"no emotion-wheel files at {wheel} (set score.wheel_dir): skipping the MER-UniBench report")
            return
        unibench = Path(self.paths.corpus + "-unibench")
        # All nine sets, a few samples each (36 in all, about what five sets of 6 took); the sentiment
        # sets are scored by the valence rules, so no LLM extractor is needed.
        write_unibench(unibench, n_per_dataset=4, seed=self.cfg.seed, datasets=ALL_DATASETS)
        out = self.runs / "demo-benchmark"
        cfg = dataclasses.replace(self.cfg, score=dataclasses.replace(self.cfg.score, wheel_dir=str(wheel)))
        with progress("label MER-UniBench", unit="samples") as bar:
            self.made["scores"] = benchmark(BenchmarkRequest((model,), unibench, out, cfg,
                                                             encoders=self.paths.models), progress=bar)
        self.step(f"MER-UniBench (synthetic) -> {out}/scores.md")
        echo((out / "scores.md").read_text(encoding="utf-8").rstrip("\n"))
        self.step(f"done; report -> {out}/report.html")
