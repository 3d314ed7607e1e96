"""``affectflow benchmark``: label every MER-UniBench test set with one or more models and score it.

For each model and dataset: `read_unibench` gives the test rows, a labeler (by default the
Ray Data batch labeling of `inference.labeling`, OV task) writes the label table, the outputs
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
from pathlib import Path
from typing import Any, Callable, Sequence

from scoring.evaluate import Prediction, evaluate, write_rows
from scoring.metrics import select_best_checkpoint
from scoring.parse import template_items
from scoring.unibench import DATASETS, UniBenchDataset, dataset_folder, get_dataset, is_synthetic
from pipelines.manifest import read_unibench
from features.labels import parse_openset
from core.errors import BenchmarkError, MissingFileError
from core.paths import require_writable
from modeling.prompt import QUESTION_TASK

TASK = "ov"
NAME_SEPARATOR = "::"  # dataset::name in the label tables (names may not hold "/")
# Class order of the MER 6-way label files, for their confusion matrices.
MER_6WAY: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")
CONFUSION_RULE = (
    "first predicted label; an empty list is neutral; matched to the dataset's label names by "
    "the same word, else by the same level-1 word on emotion wheel 1; anything else is 'other'"
)

# labeler(rows, model, out_table, batch_size=, seed=, task=, **options) -> a table (DataFrame,
# records or a path) with name, text, status, error: `label_rows` by default.
Labeler = Callable[..., Any]


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


def label_rows(rows: Sequence, model: str, out: Path, *, batch_size: int, seed: int,
               task: str = TASK, **options):
    """Label manifest rows with the batch-labeling job (`inference.labeling.label_rows`);
    returns its table. ``options`` go to the job (``cfg``, ``models`` = the encoder folder).

    The UniBench layouts are not corpus layouts the job reads by path, hence the rows entry.
    """
    try:
        from inference import labeling
    except ModuleNotFoundError as exc:
        if exc.name != "inference.labeling":
            raise
        raise BenchmarkError(
            "batch labeling (inference.labeling) is not installed in this checkout; "
            "the benchmark needs it to label the test sets"
        ) from None
    entry = getattr(labeling, "label_rows", None)
    if entry is None:
        raise BenchmarkError(
            "inference.labeling has no label_rows(rows, model, task, out, batch_size, seed) "
            "entry point for manifest rows; the benchmark cannot label UniBench folders"
        )
    return entry(list(rows), model=model, task=task, out=out, batch_size=batch_size, seed=seed,
                 **options)


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


def benchmark(
    model: str | Sequence[str],
    unibench_root: str | Path,
    datasets: Sequence[str] | None,
    out: str | Path,
    batch_size: int = 8,
    seed: int = 42,
    extractor=None,
    wheel_dir: str | Path | None = None,
    labeler: Labeler | None = None,
    task: str = TASK,
    cfg=None,
    encoders: str | Path | None = None,
    progress=None,
    sentiment: str | None = None,
    extract: str | None = None,
) -> dict:
    """Label and score MER-UniBench with one or more models; write ``scores.json``, ``scores.md``,
    ``report.html`` (+ ``plots/``) and one label table per model (``labels/<NN>-<model>.parquet``)
    under ``out``. ``wheel_dir`` None reads the packaged emotion wheels. ``extractor`` is a local
    Qwen dir or an `LLMExtractor`; ``cfg`` (label.*,
    preprocess.*, ray.*) and ``encoders`` (the clip/ + hubert/ folder for raw media) go to the
    labeling job, and so does ``progress(n, todo)`` (samples labeled per batch, `inference.labeling.label`).
    ``sentiment`` (rules|llm) and ``extract`` (llm|rules) default to ``cfg.score``'s, else rules and llm.
    Label tables are resumable: a rerun into the same ``out`` reuses them."""
    from scoring.report import PAPER, write_report

    require_writable(out, "--out", folder=True)
    asked = QUESTION_TASK if cfg is not None and cfg.label.question.strip() else task
    models = [model] if isinstance(model, str) else list(model)
    if not models:
        raise BenchmarkError("give at least one model (--model URI)")
    if len(set(models)) != len(models):
        raise BenchmarkError(f"a model is listed twice: {models}")
    root = Path(unibench_root)
    named = datasets is not None and len(datasets) > 0
    names = [get_dataset(d).name for d in datasets] if named else discover(root)
    sentiment = sentiment or (cfg.score.sentiment if cfg is not None else "rules")
    extract = extract or (cfg.score.extract if cfg is not None else "llm")
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
    labeler = labeler or label_rows
    options = {k: v for k, v in (("cfg", cfg), ("models", encoders), ("progress", progress)) if v is not None}
    if progress is not None and len(models) > 1:  # one line over every model's job (each labels the same rows)
        options["progress"] = lambda n, todo: progress(n, None if todo is None else todo * len(models))
    out = Path(out)
    results: dict[str, dict] = {}
    # One labeling job per model over every dataset's rows (one actor-pool start-up, and the
    # model stays busy across datasets); names are qualified since datasets share names.
    all_rows = [dataclasses.replace(r, name=qualify(d, r.name)) for d in todo for r in manifests[d]]
    for i, m in enumerate(models):
        table_path = out / "labels" / f"{model_key(i, m)}.parquet"
        table_path.parent.mkdir(parents=True, exist_ok=True)
        records = _read_table(labeler(all_rows, m, table_path, batch_size=batch_size, seed=seed,
                                      task=task, **options))
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
        "task": task,
        "question": (cfg.label.question.strip() if cfg is not None else "") or "",
        "decoding": cfg.label.decoding if cfg is not None else "greedy",
        "seed": seed,
        "batch_size": batch_size,
    }
    if not synthetic:  # the paper's numbers are on the real sets; synthetic scores are not set beside them
        scores["paper"] = {d: PAPER[d] / 100 for d in names}
        scores["mean"]["paper"] = _mean([PAPER[d] / 100 for d in todo])
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(scores, sort_keys=True, indent=2) + "\n",
                                     encoding="utf-8")
    write_report(scores, out)
    return scores
