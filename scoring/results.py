"""Score a results folder in the release's layout, every checkpoint, and pick the best epoch.

The release writes, per dataset, ``results-{dataset}/[model/]checkpoint_{epoch:06d}_loss_{loss}.npz``
(the outputs, ``name2reason``) and beside each its LLM's label lists ``...-openset.npz`` and, for
the sentiment sets, their sentiments ``...-openset-sentiment.npz``. Each checkpoint is scored from
its ``-openset.npz`` (read with the restricted unpickler of `scoring.safe_npz`); a missing one is
an error naming it. Sentiment sets map those lists by the valence rules (``sentiment="rules"``) or,
with ``"llm"``, take the release's ``-openset-sentiment.npz`` (else ask the extractor). The best
checkpoint per dataset is `scoring.metrics.select_best_checkpoint`'s, over epochs 30, 35, ..., 60
by default, as the release picks it (ties: the earliest), the choice `affectflow benchmark` uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from core.errors import InputError, MissingFileError
from core.sections import ScoreConfig
from scoring.evaluate import Prediction, evaluate, load_predictions
from scoring.metrics import select_best_checkpoint
from scoring.unibench import DATASETS, dataset_folder, get_dataset, is_synthetic

RESULTS_PREFIX = "results-"
OPENSET_SUFFIX = "-openset.npz"
SENTIMENT_SUFFIX = "-openset-sentiment.npz"
RELEASE_EPOCHS = range(30, 61, 5)


@dataclass(frozen=True)
class ResultsFolder:
    """One dataset's folder of checkpoint outputs."""

    dataset: str
    folder: Path
    checkpoints: tuple[Path, ...]  # the outputs files (checkpoint_*.npz without a suffix), sorted


def openset_path(checkpoint: Path) -> Path:
    """The label lists the release's extraction wrote beside ``checkpoint``."""
    return checkpoint.with_name(checkpoint.stem + OPENSET_SUFFIX)


def sentiment_path(checkpoint: Path) -> Path:
    """The sentiments the release's LLM gave ``checkpoint``'s label lists."""
    return checkpoint.with_name(checkpoint.stem + SENTIMENT_SUFFIX)


def _checkpoints(folder: Path) -> tuple[Path, ...]:
    # As the release lists them: checkpoint_* files whose name holds no '-' (the outputs, not
    # their -openset/-sentiment companions).
    return tuple(sorted(p for p in folder.glob("checkpoint_*.npz") if p.is_file() and "-" not in p.name))


def _dataset_of(path: Path, given: str | None) -> str:
    if given:
        return get_dataset(given).name
    for part in (path, *path.parents):
        if part.name.lower().startswith(RESULTS_PREFIX):
            return get_dataset(part.name[len(RESULTS_PREFIX):]).name
    raise InputError(
        f"{path}: cannot tell the dataset (no {RESULTS_PREFIX}{{dataset}} folder in the path); give --dataset"
    )


def find_results(root: str | Path, dataset: str | None = None, model: str | None = None) -> list[ResultsFolder]:
    """The results folders under ``root``: ``root`` itself when it holds checkpoints, else each
    ``results-{dataset}/`` child (its checkpoints, or those of its one model folder or of ``model``)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"results folder {root} does not exist")
    for folder in ([root / model] if model else []) + [root]:
        if folder.is_dir() and _checkpoints(folder):
            return [ResultsFolder(_dataset_of(folder, dataset), folder, _checkpoints(folder))]
    if root.name.lower().startswith(RESULTS_PREFIX):
        children = [root]
    else:
        children = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith(RESULTS_PREFIX))
    found: list[ResultsFolder] = []
    for child in children:
        name = _dataset_of(child, None)
        if dataset and name != get_dataset(dataset).name:
            continue
        if model:
            folder = child / model  # a dataset without this model's results is left out
        else:
            subs = [p for p in sorted(child.iterdir()) if p.is_dir() and _checkpoints(p)]
            if len(subs) > 1:
                raise InputError(f"{child} holds the results of several models ({', '.join(p.name for p in subs)}): "
                                 "choose one with --model NAME")
            folder = subs[0] if subs else child
        checkpoints = _checkpoints(folder) if folder.is_dir() else ()
        if checkpoints:
            found.append(ResultsFolder(name, folder, checkpoints))
    if not found:
        raise MissingFileError(
            f"{root} holds no checkpoint_*.npz results{f' of model {model!r}' if model else ''} (expected "
            f"{RESULTS_PREFIX}{{dataset}}/checkpoint_*.npz, optionally one model folder deep, or such a folder itself)"
        )
    order = list(DATASETS)
    return sorted(found, key=lambda f: order.index(f.dataset))


def _gold_path(dataset: str, gt: Path, several: bool) -> Path:
    if gt.is_file():
        if several:
            raise InputError(f"{gt} is one label file, but the results hold several datasets: give the "
                             "MER-UniBench root")
        return gt
    return dataset_folder(dataset, gt)


def _predictions(checkpoint: Path, metric: str, sentiment: str) -> dict[str, Prediction]:
    labels = openset_path(checkpoint)
    if not labels.is_file():
        raise MissingFileError(
            f"{checkpoint.name}: its label lists {labels} are missing (the release's extraction writes "
            f"{labels.name} beside each checkpoint; `affectflow evaluate --predictions {checkpoint}` "
            "scores the raw outputs instead)"
        )
    preds = {n: dataclasses.replace(p, source="released") for n, p in load_predictions(labels).items()}
    words = sentiment_path(checkpoint)
    if metric == "sentiment" and sentiment == "llm" and words.is_file():
        for n, p in load_predictions(words).items():
            if n in preds:
                preds[n] = dataclasses.replace(preds[n], sentiment=p.sentiment)
    return preds


def score_results(
    root: str | Path,
    gt: str | Path,
    score: ScoreConfig | None = None,
    *,
    dataset: str | None = None,
    model: str | None = None,
    extractor=None,
    epochs: Iterable[int] | None = RELEASE_EPOCHS,
    progress=None,
) -> dict:
    """Every checkpoint of every results folder under ``root`` scored against the gold under
    ``gt`` (the MER-UniBench root, or with one dataset its folder or label file); the best per
    dataset among ``epochs`` (None: all). ``score``: the emotion wheels (``wheel_dir``, empty: the
    packaged files) and how sentiment sets map label lists (``sentiment``: rules or llm). Returns
    ``{"datasets": {name: {"folder", "checkpoints": {file: result}}}, "best", "missing_best", "mean",
    "epochs", "sentiment", "synthetic"}``; each result keeps its ``rows``."""
    score = score if score is not None else ScoreConfig()
    wheel_dir, sentiment = score.wheel_dir or None, score.sentiment
    folders = find_results(root, dataset, model)
    gt = Path(gt)
    out: dict = {"results": str(Path(root)), "sentiment": sentiment,
                 "epochs": None if epochs is None else list(epochs), "datasets": {}}
    by_checkpoint: dict[str, dict[str, float]] = {}
    synthetic = False
    for f in folders:
        ds = DATASETS[f.dataset]
        gold = _gold_path(f.dataset, gt, len(folders) > 1)
        synthetic |= is_synthetic(gold if gold.is_dir() else gold.parent)
        results = {}
        for ckpt in f.checkpoints:
            preds = _predictions(ckpt, ds.metric, sentiment)
            result = evaluate(f.dataset, gold, preds, wheel_dir, extractor, sentiment=sentiment)
            results[ckpt.name] = result
            by_checkpoint.setdefault(ckpt.name, {})[f.dataset] = result["score"]
            if progress is not None:
                progress(1)
        out["datasets"][f.dataset] = {"folder": str(f.folder), "checkpoints": results}
    best = select_best_checkpoint(by_checkpoint, epochs=None if epochs is None else list(epochs))
    out["best"] = best
    out["synthetic"] = synthetic
    out["missing_best"] = sorted(d for d in out["datasets"] if d not in best)
    out["mean"] = sum(b["score"] for b in best.values()) / len(best) if best else None
    return out


def n_checkpoints(root: str | Path, dataset: str | None = None, model: str | None = None) -> int:
    """How many checkpoints `score_results` will score (for a progress line)."""
    return sum(len(f.checkpoints) for f in find_results(root, dataset, model))
