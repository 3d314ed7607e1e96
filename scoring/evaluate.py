"""Score one MER-UniBench dataset from a predictions file.

Predictions come as a CSV/parquet table with ``name`` and one of ``openset`` (list text),
``text`` (the model's output) or ``sentiment`` (positive/negative/neutral), or as the
reference's own result files: ``*.npz`` with ``name2reason`` (outputs), ``*-openset.npz`` or
``*-sentiment.npz`` (``filenames``/``fileitems``).

Labels per row, first that applies: the file's own list (``given``), the parsed template
(``template``), the template with run-on items cut to their emotion words (``runon``), and for
free text the ``LLMExtractor`` (``llm``) or, with ``extract="rules"``, the emotion words spotted in
the text (``spotted``); free text with neither is refused. Sentiment sets then map each list to
positive/negative/neutral by ``scoring.sentiment`` (``sentiment="rules"``, the default) or by the
extractor (``"llm"``, the reference's way), unless the file gave the sentiment word (``given``).
Every row records where its value came from (``rows``), and ``extraction`` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError, InputError, MissingFileError
from features.labels import parse_openset
from scoring import metrics
from scoring.parse import MAX_WORDS_PER_LABEL as MAX_LABEL_WORDS
from scoring.parse import format_openset, parse_template, runon_labels, spot_emotions
from scoring.unibench import UniBenchDataset, get_dataset, load_gold
from scoring.wheel import EmotionWheel

SENTIMENT_MODES = ("rules", "llm")
EXTRACT_MODES = ("llm", "rules")


class NeedsExtractorError(InputError):
    """Some predictions need the LLM extraction path and no extractor was given."""


@dataclass
class Prediction:
    """One sample's prediction in whichever form the file gave it."""

    openset: str | None = None  # list text, e.g. "[happy, sad]"
    text: str | None = None  # free model output
    sentiment: str | None = None
    # Where the value came from when not from the predictions themselves (the benchmark's
    # "failed" and "unparsed" rows, scored as empty): recorded as the row's source.
    source: str | None = None


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
        from scoring.safe_npz import load_filenames_items, load_name2reason, npz_keys

        keys = set(npz_keys(path))  # the listing only: no member is decompressed to learn the names
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


@dataclass
class Resolved:
    """Each row's label list (as list text) and where it came from."""

    opensets: dict[str, str]
    sources: dict[str, str]
    llm_calls: int = 0


def _free_text_error(source: str, n: int, total: int) -> NeedsExtractorError:
    return NeedsExtractorError(
        f"{source}: {n} of {total} predictions are free text without the "
        '"The character\'s emotional state is ..." template and need the LLM extractor '
        "(give a local Qwen2.5-Instruct checkpoint, e.g. --extractor PATH), or --extract rules "
        "to spot the emotion words in the text instead"
    )


def resolve_labels(
    preds: dict[str, Prediction], names: list[str], wheel: EmotionWheel, *, extractor=None,
    extract: str = "llm", source: str = "predictions",
) -> Resolved:
    """Label list per name: given, else the template (run-on items cut), else the extractor's
    answer or, with ``extract="rules"``, the emotion words spotted in the text."""
    if extract not in EXTRACT_MODES:
        raise ConfigError(f"extract must be one of {list(EXTRACT_MODES)}, got {extract!r}")
    out = Resolved({}, {})
    free: list[str] = []
    for n in names:
        p = preds[n]
        if p.openset is not None:
            out.opensets[n], out.sources[n] = p.openset, p.source or "given"
            continue
        if p.text is None:
            raise InputError(f"{source}: prediction {n!r} has no usable value (no labels, text or sentiment)")
        labels = parse_template(p.text)
        if labels is not None:
            out.opensets[n], out.sources[n] = format_openset(labels), "template"
            continue
        runon = runon_labels(p.text, wheel)
        if runon is not None:
            out.opensets[n], out.sources[n] = format_openset(runon[0]), "runon"
            continue
        free.append(n)
    if not free:
        return out
    if extract == "rules":
        for n in free:
            out.opensets[n], out.sources[n] = format_openset(spot_emotions(preds[n].text, wheel)), "spotted"
        return out
    if extractor is None:
        raise _free_text_error(source, len(free), len(names))
    for n, answer in zip(free, extractor.to_openset([preds[n].text for n in free]), strict=True):
        out.opensets[n], out.sources[n] = answer, "llm"
    out.llm_calls = len(free)
    return out


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))


def evaluate(
    dataset: str,
    gt: str | Path,
    predictions: str | Path | dict[str, Prediction],
    wheel_dir: str | Path | None = None,
    extractor=None,
    *,
    sentiment: str = "rules",
    extract: str = "llm",
) -> dict:
    """One dataset's scores: ``{"dataset", "metric", "score", "scores", "counts", "extraction",
    "rows"}``, sorted. ``rows``: one record per gold sample (name, labels, labels_from; on
    sentiment sets also sentiment, sentiment_from, sentiment_rule).

    ``wheel_dir`` None or empty reads the packaged emotion-wheel files. ``sentiment``: "rules"
    (`scoring.sentiment`) or "llm" (the extractor); ``extract``: what free text needs, "llm" (the
    extractor) or "rules" (word spotting).
    """
    if sentiment not in SENTIMENT_MODES:
        raise ConfigError(f"sentiment must be one of {list(SENTIMENT_MODES)}, got {sentiment!r}")
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
    rows: dict[str, dict] = {n: {"name": n} for n in names}
    n_llm = 0
    if ds.metric == "sentiment":
        words = {n: preds[n].sentiment for n in names if preds[n].sentiment is not None}
        for n in words:
            rows[n].update(sentiment=words[n], sentiment_from=preds[n].source or "given")
        todo = [n for n in names if n not in words]
        if todo and sentiment == "llm" and extractor is None:
            raise NeedsExtractorError(
                f"{source}: {len(todo)} of {len(names)} {ds.name} predictions carry emotion "
                "labels, not a sentiment; score.sentiment=llm maps labels to positive/negative/"
                "neutral with the LLM, so give the extractor (e.g. --extractor PATH), a "
                "'sentiment' column, or score.sentiment=rules"
            )
        # The wheels are read only when some row needs them (a file of sentiment words does not).
        wheel = EmotionWheel.load(wheel_dir) if todo else None
        resolved = resolve_labels(preds, todo, wheel, extractor=extractor, extract=extract, source=source)
        n_llm += resolved.llm_calls
        for n in todo:
            rows[n].update(labels=parse_openset(resolved.opensets[n]), labels_from=resolved.sources[n])
        if sentiment == "llm":
            answers = extractor.to_sentiment([resolved.opensets[n] for n in todo]) if todo else []
            for n, answer in zip(todo, answers, strict=True):
                words[n] = answer
                rows[n].update(sentiment=answer, sentiment_from="llm")
            n_llm += len(todo)
        elif todo:
            from scoring.sentiment import SentimentMapping

            mapping = SentimentMapping(wheel)
            for n in todo:
                decision = mapping.decide(rows[n]["labels"])
                words[n] = decision.sentiment
                rows[n].update(sentiment=decision.sentiment, sentiment_from="rules",
                               sentiment_rule=decision.rule)
        scores = metrics.sentiment(gold, words)
        main = scores["waf"]
    else:
        wheel = EmotionWheel.load(wheel_dir)
        resolved = resolve_labels(preds, names, wheel, extractor=extractor, extract=extract, source=source)
        n_llm = resolved.llm_calls
        labels = {n: parse_openset(resolved.opensets[n]) for n in names}
        for n in names:
            rows[n].update(labels=labels[n], labels_from=resolved.sources[n])
        if ds.metric == "ov":
            scores = metrics.ov_fscore(gold, labels, wheel)
            main = scores["f"]
        else:
            scores = metrics.hit_rate(gold, labels, wheel)
            main = scores["hit_rate"]
    extraction = {
        "labels": _count(r["labels_from"] for r in rows.values() if "labels_from" in r),
        "extract": extract,
    }
    if ds.metric == "sentiment":
        extraction["sentiment"] = _count(r["sentiment_from"] for r in rows.values())
        extraction["sentiment_mode"] = sentiment
    result = {
        "dataset": ds.name,
        "metric": ds.metric,
        "score": main,
        "scores": scores,
        "counts": {"gold": len(names), "predictions": len(preds), "llm_calls": n_llm},
        "extraction": extraction,
        "rows": [rows[n] for n in names],
    }
    return _sorted(result)


def extraction_notes(result: dict) -> list[str]:
    """Lines saying how a result's labels and sentiments were made, beyond the template."""
    ext = result.get("extraction", {})
    labels, notes = ext.get("labels", {}), []
    if labels.get("runon"):
        notes.append(f"{labels['runon']} templated outputs ran on past {MAX_LABEL_WORDS} words an item: "
                     "their long items were cut to the emotion words the wheels know")
    if labels.get("spotted"):
        notes.append(f"{labels['spotted']} free-text outputs were scored by emotion words spotted in "
                     "the text (--extract rules), not by the LLM extractor")
    if labels.get("llm"):
        notes.append(f"{labels['llm']} free-text outputs were listed by the LLM extractor")
    sentiment = ext.get("sentiment", {})
    if sentiment.get("rules"):
        from scoring.sentiment import agreement_note

        notes.append(f"{sentiment['rules']} label lists were mapped to a sentiment by the valence rules and "
                     f"calibrated weights ({agreement_note()})")
    if sentiment.get("llm"):
        notes.append(f"{sentiment['llm']} label lists were mapped to a sentiment by the LLM extractor")
    return notes


ROW_COLUMNS = ("dataset", "checkpoint", "name", "labels", "labels_from", "sentiment", "sentiment_from",
               "sentiment_rule")


def write_rows(records: list[dict], path: str | Path) -> Path:
    """Per-row records (``rows`` of `evaluate`, with ``dataset``/``checkpoint`` added where
    useful) as a CSV with ``ROW_COLUMNS``; labels as list text, cells spreadsheet-safe."""
    import csv

    from core.cells import safe_cell

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(ROW_COLUMNS)
        for rec in records:
            cells = []
            for c in ROW_COLUMNS:
                value = rec.get(c, "")
                if c == "labels" and isinstance(value, list):
                    value = format_openset(value)
                cells.append(safe_cell("" if value is None else str(value)))
            writer.writerow(cells)
    return path


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value
