"""Corpus labels: the label-text rules, the one reader of the corpus label CSVs, and their stored form.

Open-vocabulary labels travel as a list written as text: ``[happy, relaxed]``,
``['happy', 'relaxed']``, ``[]`` or plain ``happy, relaxed``. One parser serves the
training readers and the scorer so that both see the same words.

A MER2025 root holds two label tables per subset (:data:`LABEL_FILES`): track 2
(``name, openset``) and track 3 (``name, reason``). :func:`read_corpus_labels` is the only
reader of these files: the manifest (preprocessing) and the training readers both call it.
Preprocessing stores each sample's labels as two text columns of the store's samples table,
``openset`` and ``reason`` (:func:`openset_to_store`), so training needs no corpus root.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InputError, MissingFileError

if TYPE_CHECKING:
    import pandas as pd

# Label tables of a MER2025 root by subset: (track-2 openset CSV, track-3 reason CSV).
LABEL_FILES = {
    "mercaptionplus": ("track2_train_mercaptionplus.csv", "track3_train_mercaptionplus.csv"),
    "ovmerd": ("track2_train_ovmerd.csv", "track3_train_ovmerd.csv"),
}
# The subset training reads by default, and so the one preprocessing stores: MER-Caption+.
DEFAULT_SUBSET = "mercaptionplus"
# Sample columns of the store that hold the labels, as text (see openset_to_store, reason_to_store).
LABEL_COLUMNS = ("openset", "reason")

# Quotes and commas separate items; the reference splits on exactly these three characters.
_SEPARATORS = re.compile(r"['\",]")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def split_list_text(value: Any) -> list[str]:
    """Items of a list written as text, stripped but with their case kept; lists pass through.

    Strips one leading ``[`` and one trailing ``]``, splits on quotes and commas and drops
    empty items. ``None``/NaN/"" give ``[]``. Numpy arrays and sequences become lists of str.
    """
    if _is_missing(value):
        return []
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple, set)):
        return [str(v).strip() for v in value if not _is_missing(v) and str(v).strip()]
    text = str(value).strip()
    # The reference strips the brackets without stripping whitespace first; we strip
    # whitespace too, which only changes malformed inputs such as " [a, b]".
    if text.startswith("["):
        text = text[1:]
    if text.endswith("]"):
        text = text[:-1]
    return [item.strip() for item in _SEPARATORS.split(text) if item.strip()]


def parse_openset(text: Any) -> list[str]:
    """``"[Happy, 'relaxed']"`` -> ``["happy", "relaxed"]``: lower-cased, no empties."""
    return [item.lower() for item in split_list_text(text)]


def labels_or_neutral(labels: list[str]) -> list[str]:
    """An empty label list means neutral (MER-Caption+ and OV-MERD+ convention)."""
    return list(labels) if len(labels) > 0 else ["neutral"]


def _cell(value: Any) -> str | None:
    """A table cell as text; None/NaN give None."""
    return None if _is_missing(value) else str(value)


def _read_table(fs, path: str, column: str) -> "pd.DataFrame | None":
    """``name, column`` of one label CSV (None when the file is absent), first row of a name kept."""
    import pandas as pd

    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        try:
            # keep_default_na off: a sample named "NA" or "null" stays a name. A byte that is not
            # UTF-8 becomes U+FFFD: one bad cell must not cost the whole table.
            df = pd.read_csv(f, dtype=str, keep_default_na=False, encoding="utf-8-sig", encoding_errors="replace")
        except (ValueError, pd.errors.EmptyDataError) as exc:  # pandas' ParserError is a ValueError
            raise InputError(f"{path}: cannot read it as a CSV: {exc}") from None
    missing = [c for c in ("name", column) if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {missing}; expected 'name' and {column!r}, found {list(df.columns)}"
        )
    return df[["name", column]].drop_duplicates("name", keep="first")


def read_corpus_labels(
    corpus_root: "str | Path", subset: str = DEFAULT_SUBSET, storage_options: dict | None = None
) -> "pd.DataFrame":
    """``name, openset, reason`` from one subset's track-2 and track-3 CSVs (as :func:`normalize_labels` gives).

    ``corpus_root``: a local path or an fsspec URL (with ``storage_options``); ``subset``: a key of
    :data:`LABEL_FILES`. Either file may be absent (its column is then None); with neither the
    table is empty. A missing ``name``/``openset``/``reason`` column is an :class:`InputError`
    naming the file. A name listed twice in one file keeps its FIRST row, the rule the manifest
    applies to subtitles and the preprocessing job to repeated samples. An empty ``openset`` cell
    is an empty list (neutral); an empty ``reason`` cell is no description (None).
    """
    import fsspec
    import pandas as pd

    if subset not in LABEL_FILES:
        raise InputError(f"label subset {subset!r} is not one of {sorted(LABEL_FILES)}")
    fs, root = fsspec.core.url_to_fs(str(corpus_root), **(storage_options or {}))
    if not fs.isdir(root):
        raise MissingFileError(f"corpus root {corpus_root} is not a directory")
    track2, track3 = (f"{root.rstrip('/')}/{f}" for f in LABEL_FILES[subset])
    t2, t3 = _read_table(fs, track2, "openset"), _read_table(fs, track3, "reason")
    if t2 is None and t3 is None:
        return normalize_labels(pd.DataFrame({"name": []}))
    if t2 is None:
        df = t3.assign(openset=None)
    elif t3 is None:
        df = t2.assign(reason=None)
    else:
        df = t2.merge(t3, on="name", how="outer")
    return normalize_labels(df)


def normalize_labels(labels: "pd.DataFrame") -> "pd.DataFrame":
    """A label table as ``name, openset (list[str]; None when unlabelled), reason (str; None when none)``.

    ``openset`` cells are label text or lists, parsed with :func:`parse_openset` (``""`` and ``[]``
    give ``[]``: neutral); a blank ``reason`` is None. A repeated name keeps its first row.
    """
    import pandas as pd

    if "name" not in labels.columns:
        raise InputError(f"a label table needs a 'name' column, found {list(labels.columns)}")
    n = len(labels)
    openset = ([None if _is_missing(v) else parse_openset(v) for v in labels["openset"]] if "openset" in labels
               else [None] * n)
    reason = [_cell(v) for v in labels["reason"]] if "reason" in labels else [None] * n
    # object columns: pandas 3 would turn None into NaN in an inferred string column
    out = pd.DataFrame(
        {
            "name": pd.Series([str(v) for v in labels["name"]], dtype=object),
            "openset": pd.Series(openset, dtype=object),
            "reason": pd.Series([r if r is not None and r.strip() else None for r in reason], dtype=object),
        }
    )
    return out.drop_duplicates("name", keep="first").reset_index(drop=True)


def openset_to_store(value: Any) -> str:
    """A sample's label list as the store keeps it: ``"[a, b]"``, ``"[]"`` (neutral) or ``""`` (unlabelled).

    ``value`` is None (no track-2 row) or a list or label text; the words are parsed and joined
    by ``", "`` in brackets, so :func:`openset_from_store` gives them back unchanged.
    """
    if _is_missing(value):
        return ""
    return "[" + ", ".join(parse_openset(value)) + "]"


def openset_from_store(text: Any) -> list[str] | None:
    """Stored ``openset`` text back as words: ``""`` or None (unlabelled) -> None, ``"[]"`` -> ``[]``."""
    if _is_missing(text) or not str(text).strip():
        return None
    return parse_openset(text)


def reason_to_store(value: Any) -> str:
    """A sample's description as the store keeps it: the text as is, ``""`` when there is none."""
    text = _cell(value)
    return "" if text is None or not text.strip() else text


# ---- review verdicts -------------------------------------------------------------------------
# The verdicts file `affectflow review pull` writes and `affectflow train --labels` reads: one row per
# reviewed sample. ``labels`` is the label set the reviewer stands behind, written as ``[a, b]``
# (empty: the verdict gives none); ``tagged_at`` is when the sample was last changed in review
# (UTC, ISO 8601).
VERDICT_COLUMNS = ("name", "verdict", "labels", "tagged_at")
VERDICTS = ("ok", "wrong")


def write_verdicts(rows: "list[dict]", path: "str | Path") -> None:
    """Write verdict rows (dicts with :data:`VERDICT_COLUMNS`, ``labels`` a list or None) as CSV, by name.

    Written atomically (a temp file, then a rename); cells are spreadsheet-safe (`core.cells`).
    """
    import csv
    import os
    import uuid

    from core.cells import safe_cell

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(VERDICT_COLUMNS)
            for row in sorted(rows, key=lambda r: r["name"]):
                labels = row.get("labels")
                cells = {**row, "labels": "" if labels is None else "[" + ", ".join(labels) + "]"}
                writer.writerow([safe_cell(str(cells.get(c) or "")) for c in VERDICT_COLUMNS])
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_verdicts(path: "str | Path") -> "pd.DataFrame":
    """A verdicts file as ``name, verdict, labels (list[str]; None when it gives none), tagged_at``.

    A missing file, a missing column, a bad name, an unknown verdict or a name given twice is an
    :class:`InputError` naming the file (and the line).
    """
    import pandas as pd

    from core.cells import read_cell
    from core.paths import name_problem

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"verdicts file {path} does not exist (write it with `affectflow review pull`)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot read it as a CSV: {exc}") from None
    missing = [c for c in VERDICT_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; a verdicts file has {list(VERDICT_COLUMNS)}")
    seen: dict[str, int] = {}
    rows = []
    for i, rec in enumerate(df[list(VERDICT_COLUMNS)].itertuples(index=False), start=2):  # line 1 is the header
        name, verdict, labels, tagged_at = (read_cell(v) for v in rec)
        problem = name_problem(name)
        if problem:
            raise InputError(f"{path} line {i}: bad name {name!r}: {problem}")
        if verdict not in VERDICTS:
            raise InputError(f"{path} line {i}: verdict {verdict!r} is not one of {list(VERDICTS)}")
        if name in seen:
            raise InputError(f"{path} line {i}: {name!r} is given twice (first on line {seen[name]})")
        seen[name] = i
        rows.append((name, verdict, split_list_text(labels) if labels.strip() else None, tagged_at))
    return pd.DataFrame({c: pd.Series([r[k] for r in rows], dtype=object) for k, c in enumerate(VERDICT_COLUMNS)})


def override_labels(labels: "pd.DataFrame", verdicts: "pd.DataFrame") -> "pd.DataFrame":
    """``labels`` (``name, openset, reason``) with the label sets of ``verdicts`` in place of their own.

    Human labels win: a name whose verdict gives labels takes them (a name without a row gets one,
    with no description); a verdict that gives none changes nothing.
    """
    import pandas as pd

    table = normalize_labels(labels)
    given = {n: lab for n, lab in zip(verdicts["name"], verdicts["labels"]) if lab is not None}
    openset = [given.get(n, o) for n, o in zip(table["name"], table["openset"])]
    extra = [n for n in given if n not in set(table["name"])]
    out = pd.DataFrame({
        "name": list(table["name"]) + extra,
        "openset": pd.Series(openset + [given[n] for n in extra], dtype=object),
        "reason": pd.Series(list(table["reason"]) + [None] * len(extra), dtype=object),
    })
    return normalize_labels(out)
