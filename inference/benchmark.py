"""``affectflow benchmark``: label every MER-UniBench test set with one or more models and score it.

A run is a :class:`BenchmarkRequest` (built by the command from the config and its flags). For
each model and dataset: `read_unibench` gives the test rows, a labeler (by default the Ray Data
batch labeling of `inference.labeling`, OV task) writes the label table, the outputs
are scored with `inference.evaluate.evaluate`, and `scores.json` (sorted keys, no timings or
output paths, so the same inputs and seed give the same bytes), ``scores.md`` and
``report.html`` are written. Each model labels all datasets in one job, into
``labels/<NN>-<model>.parquet`` with names ``<dataset>::<name>``. With several models (e.g. the
checkpoints of epochs 30..60) the per-dataset best comes from `select_best_checkpoint`; every
listed model competes (the release's filter to epochs 30, 35, ..., 60 is the caller's choice of models).

Label extraction follows `evaluate`: outputs in the OV template are parsed without an LLM (run-on
items cut to their emotion words); free text goes to the LLM extractor when one is given, or to
word spotting with ``extract="rules"``. Sentiment sets map each label list to positive/negative/
neutral by the valence rules (``score.sentiment=rules``, the default: all nine sets score without
an LLM) or by the extractor (``llm``; then, without an extractor, they are skipped when found by
discovery and refused when named). Unlike `evaluate`, which refuses free text without an
extractor, the benchmark scores such outputs as empty predictions and counts them under
``labeling.unparsed`` (one odd output must not abort a nine-dataset run). A sample the labeler
failed on scores as an empty prediction too (hit 0, P=R=0, sentiment "neutral", i.e. not
positive), under ``labeling.failed``. Each scored row, with where its labels and sentiment came
from, goes to ``rows/<NN>-<model>.csv``. On synthetic folders (`scoring.unibench.is_synthetic`)
``scores.json`` says ``synthetic`` and carries no paper numbers.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from core.config import Config, load_config
from core.errors import BenchmarkError, MissingFileError
from core.paths import absolute, require_writable
from features.labels import parse_openset
from inference.labeling import LabelRequest
from modeling.prompt import QUESTION_TASK
from pipelines.manifest import read_unibench
from scoring.evaluate import Prediction, evaluate, write_rows
from scoring.metrics import select_best_checkpoint
from scoring.parse import template_items
from scoring.unibench import DATASETS, UniBenchDataset, dataset_folder, get_dataset, is_synthetic

TASK = "ov"
NAME_SEPARATOR = "::"  # dataset::name in the label tables (names may not hold "/")
# Class order of the MER 6-way label files, for their confusion matrices.
MER_6WAY: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")
CONFUSION_RULE = (
    "first predicted label; an empty list is neutral; matched to the dataset's label names by "
    "the same word, else by the same level-1 word on emotion wheel 1; anything else is 'other'"
)

# labeler(request, progress) -> a table (DataFrame, records or a path) with name, task, text, status,
# error for the request's rows (`LabelRequest.rows`, named dataset::name): `label_table` by default.
Labeler = Callable[[LabelRequest, Any], Any]


@dataclass(frozen=True)
class BenchmarkRequest:
    """One benchmark run, as the command built it from the config and its flags (paths made absolute here).

    ``cfg`` gives the labeling (``label.*`` but the task, which is OV or ``label.question``; ``seed``,
    ``preprocess.*``, ``ray.*``) and the scoring (``score.wheel_dir``, ``score.sentiment``,
    ``score.extract``); the fields say the rest.
    """

    models: tuple[str, ...]  # checkpoints, run folders or MLflow URIs; several compete per dataset
    unibench_root: Path  # the folder holding the *-process dataset folders
    out: Path  # scores.json, scores.md, report.html, labels/, rows/
    cfg: Config = field(default_factory=load_config)
    datasets: tuple[str, ...] = ()  # names or aliases; empty: every folder found under the root
    extractor: Any = None  # a local Qwen2.5-Instruct folder or an `LLMExtractor`, for free text
    encoders: Path | None = None  # the clip/ + hubert/ folder for raw media (as `affectflow label --models`)

    def __post_init__(self) -> None:
        put = object.__setattr__
        models = [self.models] if isinstance(self.models, (str, Path)) else self.models
        put(self, "models", tuple(str(m) for m in models))
        put(self, "datasets", tuple(self.datasets or ()))
        for name in ("unibench_root", "out", "encoders"):
            put(self, name, absolute(getattr(self, name)))


def qualify(dataset: str, name: str) -> str:
    """The name a sample carries through the labeling job: ``MER2023::sample_00000001``."""
    return f"{dataset}{NAME_SEPARATOR}{name}"


def model_key(index: int, model: str) -> str:
    """A folder name for a model's label tables: its position and a filesystem-safe slug."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.rstrip("/").split("://")[-1]).strip("_.")
    return f"{index:02d}-{slug[-60:] or 'model'}"


def discover(unibench_root: str | Path) -> list[str]:
    """The datasets whose ``*-process`` folder exists under ``unibench_root``, in table order."""
    root = Path(unibench_root)
    if not root.is_dir():
        raise MissingFileError(f"MER-UniBench root {root} does not exist")
    found = [name for name, ds in DATASETS.items() if (root / ds.folder).is_dir()]
    if not found:
        expected = ", ".join(ds.folder for ds in DATASETS.values())
        raise BenchmarkError(f"{root} holds none of the MER-UniBench folders ({expected})")
    return found


def label_table(request: LabelRequest, progress=None):
    """The default labeler: the batch-labeling job (`inference.labeling.label`) over the request's
    manifest rows (the UniBench layouts are not corpus layouts the job reads by path); its table (pandas)."""
    from inference.labeling import label
    from inference.table import read_table

    label(request, progress=progress)
    return read_table(request.out).to_pandas()


def _read_table(table) -> list[dict]:
    if hasattr(table, "to_dict"):
        return table.to_dict("records")
    if isinstance(table, (str, Path)):
        import pandas as pd

        path = Path(table)
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(
            path, keep_default_na=False, dtype=str)
        return df.to_dict("records")
    return list(table)


def _predictions(ds: UniBenchDataset, rows: Sequence, table) -> tuple[dict[str, Prediction], int]:
    """``{name: Prediction}`` for every test row, and how many failed (or were not labeled)."""
    records = {str(r["name"]): r for r in _read_table(table)}
    preds: dict[str, Prediction] = {}
    failed = 0
    for row in rows:
        rec = records.get(row.name)
        text = None if rec is None else rec.get("text")
        ok = rec is not None and str(rec.get("status", "ok")) == "ok" and isinstance(text, str)
        if ok:
            preds[row.name] = Prediction(text=text)
        else:
            failed += 1
            preds[row.name] = (Prediction(sentiment="neutral", source="failed") if ds.metric == "sentiment"
                               else Prediction(openset="[]", source="failed"))
    return preds, failed


def _classes(ds: UniBenchDataset, gold: dict[str, Any]) -> list[str]:
    order = ds.label_names or MER_6WAY
    seen = set(gold.values())
    return [c for c in order if c in seen] + sorted(seen - set(order))


def confusion(ds: UniBenchDataset, gold: dict[str, str], opensets: dict[str, str],
              wheel) -> dict:
    """Gold class x first predicted label (see ``CONFUSION_RULE``) counts for a discrete set."""
    gold_classes = _classes(ds, gold)
    pred_classes = [*gold_classes, "other"]
    if "neutral" not in pred_classes:
        pred_classes.insert(-1, "neutral")
    level1 = {c: wheel.map_label(c, 1) for c in gold_classes}
    matrix = [[0] * len(pred_classes) for _ in gold_classes]
    for name, g in gold.items():
        labels = parse_openset(opensets[name])  # list text or a list
        first = labels[0] if labels else "neutral"
        if first in pred_classes:
            col = first
        else:
            mapped = wheel.map_label(first, 1)
            col = next((c for c in gold_classes if mapped and level1[c] == mapped), "other")
        matrix[gold_classes.index(g)][pred_classes.index(col)] += 1
    return {"gold": gold_classes, "pred": pred_classes, "matrix": matrix, "rule": CONFUSION_RULE}


def score_dataset(ds: UniBenchDataset, folder: Path, rows: Sequence, table, wheel_dir,
                  extractor=None, *, sentiment: str = "rules", extract: str = "llm") -> dict:
    """`evaluate` one labeled dataset, plus labeling counts and (discrete sets) a confusion."""
    from scoring.unibench import load_gold
    from scoring.wheel import EmotionWheel

    preds, failed = _predictions(ds, rows, table)
    names = [r.name for r in rows]
    unparsed = 0
    if extractor is None and extract != "rules":
        for n in names:
            if preds[n].text is not None and template_items(preds[n].text) is None:
                preds[n] = Prediction(openset="[]", source="unparsed")
                unparsed += 1
    result = evaluate(ds.name, folder, preds, wheel_dir, extractor=extractor, sentiment=sentiment,
                      extract=extract)
    result["labeling"] = {"n": len(rows), "failed": failed, "unparsed": unparsed}
    if ds.metric == "hit_rate":
        gold = load_gold(ds, folder)
        opensets = {r["name"]: r["labels"] for r in result["rows"]}
        result["confusion"] = confusion(ds, gold, opensets, EmotionWheel.load(wheel_dir))
    return result


def _load_extractor(extractor):
    if extractor is None or not isinstance(extractor, (str, Path)):
        return extractor
    from scoring.parse import LLMExtractor

    return LLMExtractor(extractor)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def benchmark(request: BenchmarkRequest, *, labeler: Labeler | None = None, progress=None) -> dict:
    """Label and score MER-UniBench with one or more models; write ``scores.json``, ``scores.md``,
    ``report.html`` (+ ``plots/``) and one label table per model (``labels/<NN>-<model>.parquet``)
    under ``request.out``. ``labeler`` replaces the batch-labeling job (`label_table`), which gets
    ``progress(n, todo)`` (samples labeled per batch, `inference.labeling.label`).
    Label tables are resumable: a rerun into the same ``out`` reuses them."""
    from scoring.report import PAPER, write_report

    cfg, out, root = request.cfg, request.out, request.unibench_root
    require_writable(out, "--out", folder=True)
    question = cfg.label.question.strip()
    asked = QUESTION_TASK if question else TASK
    models = list(request.models)
    if not models:
        raise BenchmarkError("give at least one model (--model URI)")
    if len(set(models)) != len(models):
        raise BenchmarkError(f"a model is listed twice: {models}")
    named = len(request.datasets) > 0
    names = [get_dataset(d).name for d in request.datasets] if named else discover(root)
    sentiment, extract, wheel_dir = cfg.score.sentiment, cfg.score.extract, cfg.score.wheel_dir or None
    extractor = request.extractor
    skipped: dict[str, str] = {}
    if extractor is None and sentiment == "llm":
        sentiment_sets = [d for d in names if DATASETS[d].metric == "sentiment"]
        if sentiment_sets and named:
            raise BenchmarkError(
                f"{', '.join(sentiment_sets)} are sentiment sets: with score.sentiment=llm mapping labels "
                "to positive/negative/neutral needs the LLM extractor (--extractor PATH to a local "
                "Qwen2.5-Instruct), or score.sentiment=rules"
            )
        for d in sentiment_sets:
            skipped[d] = "sentiment set: score.sentiment=llm needs the LLM extractor (--extractor PATH)"
    todo = [d for d in names if d not in skipped]
    # Read every dataset before labeling anything: a missing folder fails fast.
    manifests = {d: read_unibench(d, root) for d in todo}
    extractor = _load_extractor(extractor)
    labeler = labeler or label_table
    per_job = progress
    if progress is not None and len(models) > 1:  # one line over every model's job (each labels the same rows)
        def per_job(n: int, todo: int | None) -> None:
            progress(n, None if todo is None else todo * len(models))
    label_cfg = dataclasses.replace(cfg, label=dataclasses.replace(cfg.label, task=TASK))
    results: dict[str, dict] = {}
    # One labeling job per model over every dataset's rows (one actor-pool start-up, and the
    # model stays busy across datasets); names are qualified since datasets share names.
    all_rows = [dataclasses.replace(r, name=qualify(d, r.name)) for d in todo for r in manifests[d]]
    for i, m in enumerate(models):
        table_path = out / "labels" / f"{model_key(i, m)}.parquet"
        table_path.parent.mkdir(parents=True, exist_ok=True)
        job = LabelRequest(None, m, table_path, label_cfg, rows=tuple(all_rows), models=request.encoders)
        records = _read_table(labeler(job, per_job))
        # A reused table can hold other tasks' rows (a run with --question, then one without):
        # score only the answers to what this run asked.
        records = [r for r in records if str(r.get("task", asked)) == asked]
        per_ds: dict[str, dict] = {}
        scored_rows: list[dict] = []
        for d in todo:
            ds = DATASETS[d]
            prefix = qualify(d, "")
            mine = [{**r, "name": str(r["name"])[len(prefix):]} for r in records
                    if str(r["name"]).startswith(prefix)]
            per_ds[d] = score_dataset(ds, dataset_folder(ds, root), manifests[d], mine,
                                      wheel_dir, extractor, sentiment=sentiment, extract=extract)
            # Per-row records go to their own file: scores.json stays a summary.
            scored_rows += [{"dataset": d, **r} for r in per_ds[d].pop("rows")]
        write_rows(scored_rows, out / "rows" / f"{model_key(i, m)}.csv")
        results[m] = {"datasets": per_ds, "mean": _mean([r["score"] for r in per_ds.values()])}
    best = select_best_checkpoint(
        {m: {d: r["score"] for d, r in results[m]["datasets"].items()} for m in models},
        epochs=None,
    )
    synthetic = any(is_synthetic(dataset_folder(DATASETS[d], root)) for d in todo)
    scores = {
        "datasets": names,
        "model_order": models,
        "models": results,
        "best": best,
        "skipped": skipped,
        "synthetic": synthetic,
        "sentiment": sentiment,
        "extract": extract,
        "mean": {"best": _mean([best[d]["score"] for d in todo])},
        "task": TASK,
        "question": question,
        "decoding": cfg.label.decoding,
        "seed": cfg.seed,
        "batch_size": cfg.label.batch_size,
    }
    if not synthetic:  # the paper's numbers are on the real sets; synthetic scores are not set beside them
        scores["paper"] = {d: PAPER[d] / 100 for d in names}
        scores["mean"]["paper"] = _mean([PAPER[d] / 100 for d in todo])
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(scores, sort_keys=True, indent=2) + "\n",
                                     encoding="utf-8")
    write_report(scores, out)
    return scores
