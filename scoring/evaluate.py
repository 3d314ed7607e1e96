"""Score one MER-UniBench dataset from a predictions file.

Predictions come as a CSV/parquet table with ``name`` and one of ``openset`` (list text),
``text`` (the model's output) or ``sentiment`` (positive/negative/neutral), or as the
reference's own result files: ``*.npz`` with ``name2reason`` (outputs), ``*-openset.npz`` or
``*-sentiment.npz`` (``filenames``/``fileitems``). Templated outputs are parsed without an LLM;
free text needs an ``LLMExtractor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoring import metrics
from scoring.parse import format_openset, parse_template
from scoring.unibench import UniBenchDataset, get_dataset, load_gold
from scoring.wheel import EmotionWheel
from features.labels import parse_openset
from core.errors import InputError, MissingFileError


class NeedsExtractorError(InputError):
    """Some predictions need the LLM extraction path and no extractor was given."""


@dataclass
class Prediction:
    """One sample's prediction in whichever form the file gave it."""

    openset: str | None = None  # list text, e.g. "[happy, sad]"
    text: str | None = None  # free model output
    sentiment: str | None = None


def _table(path: Path):
    import pandas as pd

    if path.suffix not in (".parquet", ".csv", ".tsv"):
        raise InputError(
            f"{path}: unsupported predictions format (use .csv, .parquet or a reference .npz)"
        )
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(
            path, sep="\t" if path.suffix == ".tsv" else ",", keep_default_na=False, dtype=str
        )
    except ValueError as exc:  # pyarrow's ArrowInvalid, pandas' ParserError, UnicodeDecodeError
        raise InputError(f"{path}: cannot read it as a {path.suffix[1:]} table: {exc}") from None


def load_predictions(path: str | Path) -> dict[str, Prediction]:
    """``{name: Prediction}`` from a table or a reference result npz."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"predictions file {path} does not exist")
    if path.suffix == ".npz":
        from scoring.safe_npz import load_filenames_items, load_name2reason, load_npz

        keys = set(load_npz(path))
        if "name2reason" in keys:
            return {n: Prediction(text=_text(v)) for n, v in load_name2reason(path).items()}
        if {"filenames", "fileitems"} <= keys:
            items = load_filenames_items(path)
            if path.name.endswith("-sentiment.npz"):
                return {n: Prediction(sentiment=_text(v)) for n, v in items.items()}
            return {
                n: Prediction(openset=v if isinstance(v, str) else format_openset(parse_openset(v)))
                for n, v in items.items()
            }
        raise InputError(
            f"{path}: expected 'name2reason' or 'filenames'+'fileitems' arrays, "
            f"found {sorted(keys)}"
        )
    df = _table(path)
    if "name" not in df.columns:
        raise InputError(f"{path}: missing column 'name' (has {list(df.columns)})")
    present = [c for c in ("openset", "text", "sentiment") if c in df.columns]
    if not present:
        raise InputError(
            f"{path}: needs an 'openset', 'text' or 'sentiment' column (has {list(df.columns)})"
        )
    out: dict[str, Prediction] = {}
    for row, record in enumerate(df.to_dict("records"), start=2):
        name = str(record["name"])
        if name in out:
            raise InputError(f"{path} row {row}: duplicate name {name!r}")
        out[name] = Prediction(**{c: _text(record[c]) for c in present})
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value if isinstance(value, str) else str(value)


def resolve_opensets(
    preds: dict[str, Prediction], names: list[str], extractor, source: str
) -> tuple[dict[str, str], int]:
    """List text per name: given openset, else the parsed template, else the extractor's answer."""
    opensets: dict[str, str] = {}
    free: list[str] = []
    for n in names:
        p = preds[n]
        if p.openset is not None:
            opensets[n] = p.openset
        elif p.text is not None:
            labels = parse_template(p.text)
            if labels is None:
                free.append(n)
            else:
                opensets[n] = format_openset(labels)
        else:
            free.append(n)
    if free:
        if extractor is None:
            raise NeedsExtractorError(
                f"{source}: {len(free)} of {len(names)} predictions are free text without the "
                '"The character\'s emotional state is ..." template and need the LLM extractor '
                "(give a local Qwen2.5-Instruct checkpoint, e.g. --extractor PATH)"
            )
        missing_text = [n for n in free if preds[n].text is None]
        if missing_text:
            raise InputError(
                f"{source}: {len(missing_text)} predictions have no usable value "
                f"(e.g. {missing_text[0]!r})"
            )
        for n, answer in zip(
            free, extractor.to_openset([preds[n].text for n in free]), strict=True
        ):
            opensets[n] = answer
    return opensets, len(free)


def evaluate(
    dataset: str,
    gt: str | Path,
    predictions: str | Path | dict[str, Prediction],
    wheel_dir: str | Path | None = None,
    extractor=None,
) -> dict:
    """One dataset's scores: ``{"dataset", "metric", "score", "scores", "counts"}``, sorted.

    ``wheel_dir`` None or empty reads the packaged emotion-wheel files.
    """
    ds: UniBenchDataset = get_dataset(dataset)
    gold = load_gold(ds, gt)
    preds = predictions if isinstance(predictions, dict) else load_predictions(predictions)
    source = str(predictions) if not isinstance(predictions, dict) else "predictions"
    names = sorted(gold)
    missing = [n for n in names if n not in preds]
    if missing:
        raise metrics.MissingPredictionsError(
            f"{source}: {len(missing)} of {len(names)} {ds.name} gold samples have no prediction "
            f"(e.g. {', '.join(missing[:5])})"
        )
    n_llm = 0
    if ds.metric == "sentiment":
        words = {n: preds[n].sentiment for n in names if preds[n].sentiment is not None}
        todo = [n for n in names if n not in words]
        if todo:
            if extractor is None:
                raise NeedsExtractorError(
                    f"{source}: {len(todo)} of {len(names)} {ds.name} predictions carry emotion "
                    "labels, not a sentiment; the reference maps labels to positive/negative/"
                    "neutral with an LLM, so give the extractor (e.g. --extractor PATH) or a "
                    "'sentiment' column"
                )
            opensets, n_llm = resolve_opensets(preds, todo, extractor, source)
            for n, answer in zip(
                todo, extractor.to_sentiment([opensets[n] for n in todo]), strict=True
            ):
                words[n] = answer
            n_llm += len(todo)
        scores = metrics.sentiment(gold, words)
        main = scores["waf"]
    else:
        wheel = EmotionWheel.load(wheel_dir)
        opensets, n_llm = resolve_opensets(preds, names, extractor, source)
        labels = {n: parse_openset(opensets[n]) for n in names}
        if ds.metric == "ov":
            scores = metrics.ov_fscore(gold, labels, wheel)
            main = scores["f"]
        else:
            scores = metrics.hit_rate(gold, labels, wheel)
            main = scores["hit_rate"]
    result = {
        "dataset": ds.name,
        "metric": ds.metric,
        "score": main,
        "scores": scores,
        "counts": {"gold": len(names), "predictions": len(preds), "llm_calls": n_llm},
    }
    return _sorted(result)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value
