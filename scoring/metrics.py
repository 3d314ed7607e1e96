"""MER-UniBench metrics: emotion-wheel OV F-score, hit rate, sentiment WAF/accuracy.

They follow the reference ``my_affectgpt/evaluation/wheel.py``
(``calculate_openset_overlap_rate``, ``calculate_openset_onehot_hitrate``), ``ew_metric.py``
(``wheel_metric_calculation``, ``hitrate_metric_calculation``) and ``evaluation.py``
(``calculate_dimension_zeroshot``, best-epoch selection). Predictions are label lists (or list
text); every gold sample needs a prediction, as in the reference (which fails with a KeyError
on a missing one): we raise ``MissingPredictionsError`` naming how many are missing.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from core.errors import InputError
from features.labels import parse_openset
from scoring.wheel import EmotionWheel

SENTIMENTS = ("positive", "negative", "neutral")


class MissingPredictionsError(InputError):
    """Gold samples without a prediction."""


def _check_covered(gold: Mapping, pred: Mapping, names: Iterable[str] | None = None) -> None:
    missing = sorted(n for n in (gold if names is None else names) if n not in pred)
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise MissingPredictionsError(
            f"{len(missing)} of {len(gold)} gold samples have no prediction (e.g. {shown})"
        )


def _labels(value: Any) -> list[str]:
    return parse_openset(value)


def _mean(values: list[float]) -> float:
    import numpy as np

    return float(np.mean(values))


def ov_fscore(gold: Mapping[str, Any], pred: Mapping[str, Any], wheel: EmotionWheel) -> dict:
    """EW F-score: per wheel mean P and R over samples, F=2PR/(P+R); then mean over wheels.

    Samples whose mapped gold set is empty are skipped; an empty mapped prediction scores P=R=0.
    """
    _check_covered(gold, pred)
    names = sorted(gold)
    gold_lists = {n: _labels(gold[n]) for n in names}
    pred_lists = {n: _labels(pred[n]) for n in names}
    per_wheel = []
    for k in range(1, wheel.n_wheels + 1):
        precisions, recalls = [], []
        for n in names:
            g = wheel.map_labels(gold_lists[n], k)
            if not g:
                continue
            p = wheel.map_labels(pred_lists[n], k)
            if not p:
                precisions.append(0.0)
                recalls.append(0.0)
            else:
                hit = len(g & p)
                precisions.append(hit / len(p))
                recalls.append(hit / len(g))
        if not precisions:
            raise InputError(f"no gold label maps onto wheel {k}: nothing to score")
        precision, recall = _mean(precisions), _mean(recalls)
        # The reference divides unguarded (NaN when P=R=0); 0 is the F-score's limit there.
        f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        per_wheel.append(
            {"wheel": k, "f": f, "precision": precision, "recall": recall, "n": len(precisions)}
        )
    return {
        "f": _mean([w["f"] for w in per_wheel]),
        "precision": _mean([w["precision"] for w in per_wheel]),
        "recall": _mean([w["recall"] for w in per_wheel]),
        "per_wheel": per_wheel,
    }


def hit_rate(gold: Mapping[str, str], pred: Mapping[str, Any], wheel: EmotionWheel) -> dict:
    """Share of samples whose mapped prediction holds the mapped gold label; mean over wheels.

    Per wheel, samples whose gold label maps to nothing (neutral, for one) are skipped.
    """
    _check_covered(gold, pred)
    names = sorted(gold)
    pred_lists = {n: _labels(pred[n]) for n in names}
    per_wheel = []
    for k in range(1, wheel.n_wheels + 1):
        hits = []
        for n in names:
            g = wheel.map_labels(_labels(gold[n]), k)
            if not g:
                continue
            # |P∩G| as the reference counts it: 0 or 1, since the gold is one label.
            hits.append(float(len(g & wheel.map_labels(pred_lists[n], k))))
        if not hits:
            raise InputError(f"no gold label maps onto wheel {k}: nothing to score")
        per_wheel.append({"wheel": k, "hit_rate": _mean(hits), "n": len(hits)})
    return {"hit_rate": _mean([w["hit_rate"] for w in per_wheel]), "per_wheel": per_wheel}


def sentiment_value(prediction: Any) -> int:
    """positive -> 1, negative -> -1, anything else (neutral, unparseable) -> 0.

    Exact words after stripping, as the reference compares the LLM's answer; a one-item
    list holding the word is accepted too.
    """
    if isinstance(prediction, (list, tuple)) and len(prediction) == 1:
        prediction = prediction[0]
    if not isinstance(prediction, str):
        return 0
    word = prediction.strip()
    return {"positive": 1, "negative": -1}.get(word, 0)


def sentiment(gold: Mapping[str, float], pred: Mapping[str, Any]) -> dict:
    """Binary sentiment over samples with gold != 0: weighted F1 ("waf", sklearn) and accuracy."""
    from sklearn.metrics import accuracy_score, f1_score

    _check_covered(gold, pred)
    names = sorted(n for n in gold if float(gold[n]) != 0)
    if not names:
        raise InputError("every gold value is 0: nothing to score")
    y_true = [float(gold[n]) > 0 for n in names]
    y_pred = [sentiment_value(pred[n]) > 0 for n in names]
    return {
        "waf": float(f1_score(y_true, y_pred, average="weighted")),
        "acc": float(accuracy_score(y_true, y_pred)),
        "n": len(names),
    }


def select_best_checkpoint(
    scores_by_ckpt: Mapping[Any, Mapping[str, float]],
    epochs: Iterable[int] | None = range(30, 61, 5),
) -> dict[str, dict]:
    """Per dataset, the checkpoint with the highest main score (by default epochs 30, 35, ..., 60, as the release).

    Checkpoint keys are epoch numbers or names holding one (``checkpoint_000030_loss_0.6``); with
    ``epochs=None`` every checkpoint competes. Ties go to the earliest, like the reference's argmax.
    """
    allowed = None if epochs is None else set(epochs)
    chosen = []
    for ckpt in scores_by_ckpt:
        epoch = checkpoint_epoch(ckpt)
        if allowed is None or epoch in allowed:
            chosen.append((epoch, str(ckpt), ckpt))
    chosen.sort(key=lambda t: (t[0] if t[0] is not None else -1, t[1]))
    best: dict[str, dict] = {}
    for epoch, _, ckpt in chosen:
        for dataset, score in scores_by_ckpt[ckpt].items():
            if dataset not in best or score > best[dataset]["score"]:
                best[dataset] = {"checkpoint": ckpt, "epoch": epoch, "score": float(score)}
    return {d: best[d] for d in sorted(best)}


def checkpoint_epoch(ckpt: Any) -> int | None:
    """The epoch of a checkpoint key: an int itself, or the number in ``checkpoint_000030...``."""
    if isinstance(ckpt, int):
        return ckpt
    import re

    # Reference result files are named checkpoint_{epoch:06d}_loss_{loss}.npz.
    m = re.search(r"checkpoint_0*(\d+)", str(ckpt)) or re.search(r"(\d+)", str(ckpt))
    return int(m.group(1)) if m else None
