"""The label table: its columns and schema, how it is read and written, and how a run resumes.

One row per (name, task) with columns :data:`COLUMNS`, as parquet or CSV: ``question`` is the
question asked, ``subtitle_cut`` the subtitle tokens dropped to fit the prompt budget (0: whole).
Each finished block is written at once as a part file under ``<out>.parts/`` (:class:`PartWriter`); at the end
:func:`finish` merges the old table and the parts and replaces the output atomically, so a
killed job keeps what it finished and never leaves a torn table. Written sorted by (name,
task), with a fixed schema without pandas metadata and fixed compression: equal content gives
equal bytes.

Provenance: a parquet table (and each part) records in its file metadata, under
:data:`PROVENANCE_KEY`, the model (reference, version, the checkpoint's source format and sha256)
and the exact decoding settings its rows were made with, as JSON with sorted keys (the same run
gives the same bytes). A run that resumes a table made with other settings is refused
(:func:`merge_provenance`): one table, one set of settings. A CSV table carries none.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Sequence

from core.cells import read_cell, safe_cell
from core.errors import InputError

COLUMNS = ("name", "task", "question", "text", "labels", "model_uri", "model_version", "status", "error",
           "subtitle_cut")
# Columns a table written before they existed lacks, and what its rows mean by them.
LEGACY_DEFAULTS = {"question": "", "subtitle_cut": 0}
OK, FAILED = "ok", "failed"
PARQUET_COMPRESSION = "zstd"
PROVENANCE_KEY = "affectflow.provenance"


def schema():
    """The Arrow schema of the table (labels a list of strings, everything else a string)."""
    import pyarrow as pa

    return pa.schema([
        ("name", pa.string()), ("task", pa.string()), ("question", pa.string()), ("text", pa.string()),
        ("labels", pa.list_(pa.string())), ("model_uri", pa.string()), ("model_version", pa.string()),
        ("status", pa.string()), ("error", pa.string()), ("subtitle_cut", pa.int32()),
    ])


def to_arrow(columns: dict[str, Sequence]):
    """Output columns (labels as JSON text or lists) -> an Arrow table of the fixed schema."""
    import pyarrow as pa

    labels = [json.loads(v) if isinstance(v, str) else (None if v is None else list(v)) for v in columns["labels"]]
    n = len(labels)
    data = {k: [("" if v is None else str(v)) for v in columns.get(k, [""] * n)]
            for k in COLUMNS if k not in ("labels", "subtitle_cut")}
    data["labels"] = labels
    data["subtitle_cut"] = [int(v or 0) for v in columns.get("subtitle_cut", [0] * n)]
    return pa.table({k: data[k] for k in COLUMNS}, schema=schema())


def _format_list(labels) -> str:
    return "" if labels is None else "[" + ", ".join(labels) + "]"


def read_table(path: str | Path):
    """An output table (parquet or CSV) as Arrow, in the fixed schema; CSV labels parsed back."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        for col, value in LEGACY_DEFAULTS.items():
            if col not in table.column_names:
                table = table.append_column(col, pa.array([value] * table.num_rows, schema().field(col).type))
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise InputError(f"{path}: not a label table (missing column(s) {missing}); choose another --out")
        return table.select(list(COLUMNS)).cast(schema())
    import pandas as pd

    from features.labels import split_list_text

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col, value in LEGACY_DEFAULTS.items():
        if col not in df.columns:
            df[col] = str(value)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a label table (missing column(s) {missing}); choose another --out")
    cols = {c: [read_cell(v) for v in df[c]] for c in COLUMNS}  # undo the spreadsheet-safe quote
    cols["labels"] = [None if v == "" else split_list_text(v) for v in cols["labels"]]
    return to_arrow(cols)


def _write_parquet(table, path: Path, provenance: dict | None, **options) -> None:
    """``table`` as parquet, with ``provenance`` (if any) in the file's key-value metadata."""
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, table.schema, compression=PARQUET_COMPRESSION, **options) as writer:
        writer.write_table(table)
        if provenance:
            writer.add_key_value_metadata({PROVENANCE_KEY: json.dumps(provenance, sort_keys=True)})


def read_provenance(path: str | Path) -> dict | None:
    """The provenance a parquet table or part records; None for a CSV table or one written without it."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix != ".parquet" or not path.is_file():
        return None
    meta = pq.ParquetFile(path).metadata.metadata or {}
    raw = meta.get(PROVENANCE_KEY.encode())
    return json.loads(raw) if raw else None


def merge_provenance(recorded: dict | None, run: dict, where: str | Path) -> dict:
    """``run``'s provenance for a table that already records ``recorded``: the same in every setting but the
    new-token budgets, which are per task (a run may ask other tasks), joined. Raises ``InputError`` naming
    ``where`` and each setting that differs."""
    if not recorded:
        return run
    budgets = "max_new_tokens"

    def flat(p: dict) -> dict:
        return {f"{section}.{k}": v for section, values in p.items() if isinstance(values, dict)
                for k, v in values.items() if k != budgets}

    old, new = flat(recorded), flat(run)
    diff = [f"{k} {old.get(k)!r} (this run: {new.get(k)!r})" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    old_b = dict((recorded.get("decoding") or {}).get(budgets) or {})
    new_b = dict((run.get("decoding") or {}).get(budgets) or {})
    diff += [f"decoding.{budgets}.{t} {old_b[t]!r} (this run: {new_b[t]!r})"
             for t in sorted(set(old_b) & set(new_b)) if old_b[t] != new_b[t]]
    if diff:
        raise InputError(f"{where} was labeled with other settings: {'; '.join(diff)}. One table holds one model "
                         "and one set of decoding settings: label into a new --out, or remove this one to start over")
    merged = json.loads(json.dumps(run))
    merged.setdefault("decoding", {})[budgets] = dict(sorted({**old_b, **new_b}.items()))
    return merged


def write_table(table, path: str | Path, provenance: dict | None = None) -> None:
    """Write sorted by (name, task), atomically (temp file + rename), byte-identical for equal content;
    a parquet table records ``provenance`` (module docstring)."""
    path = Path(path)
    table = table.sort_by([("name", "ascending"), ("task", "ascending")]).replace_schema_metadata(None)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if path.suffix == ".parquet":
            _write_parquet(table, tmp, provenance, write_statistics=False, store_schema=False)
        else:
            import pandas as pd

            df = pd.DataFrame({c: table.column(c).to_pylist() for c in COLUMNS})
            df["labels"] = [_format_list(v) for v in df["labels"]]
            df = df.map(safe_cell)  # a cell like "=HYPERLINK(...)" must stay text in a spreadsheet
            df.to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def parts_dir(out: Path) -> Path:
    """Where the parts of an unfinished run of ``out`` are written."""
    return out.with_name(out.name + ".parts")


def existing(out: Path):
    """The output table plus parts left by an interrupted run (later rows win), or None."""
    import pyarrow as pa

    tables = [read_table(out)] if out.exists() else []
    pdir = parts_dir(out)
    if pdir.is_dir():
        tables += [read_table(p) for p in sorted(pdir.glob("part-*.parquet"))]
    if not tables:
        return None
    merged = pa.concat_tables(tables)
    # Keep the last occurrence of each (name, task): a retried row replaces its failed one.
    keys = list(zip(merged.column("name").to_pylist(), merged.column("task").to_pylist()))
    last = {k: i for i, k in enumerate(keys)}
    return merged.take(sorted(last.values()))


def done_pairs(table, retry_failed: bool, questions: dict[str, str] | None = None) -> set[tuple[str, str]]:
    """The (name, task) pairs a run skips: ok ones, and failed ones too unless ``retry_failed``.

    With ``questions`` (task -> the question this run asks), a row asked another question is not
    done: it is asked again and replaced. A row of a table that predates the question column
    counts as asked the task's question (only ov and description existed then).
    """
    if table is None:
        return set()
    names, tasks, asked, status = (table.column(c).to_pylist() for c in ("name", "task", "question", "status"))
    return {(n, t) for n, t, q, s in zip(names, tasks, asked, status)
            if (s == OK or not retry_failed) and (questions is None or not q or questions.get(t) == q)}


def recorded_provenance(out: Path, run: dict) -> dict:
    """``run``'s provenance merged with what ``out`` and its unfinished parts record (:func:`merge_provenance`);
    raises ``InputError`` before any work when one of them was made with other settings."""
    merged = run
    pdir = parts_dir(out)
    for path in [out, *(sorted(pdir.glob("part-*.parquet")) if pdir.is_dir() else [])]:
        merged = merge_provenance(read_provenance(path), merged, path)
    return merged


class PartWriter:
    """Writes each finished block as ``<out>.parts/part-<seq>-<uuid>.parquet`` (a killed job keeps it), with
    ``provenance`` (set it before the first write) in its metadata."""

    def __init__(self, out: Path, provenance: dict | None = None):
        self.dir = parts_dir(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seq = len(list(self.dir.glob("part-*.parquet")))
        self.provenance = provenance

    def write(self, columns: dict[str, Sequence]) -> None:
        if not len(columns["name"]):
            return
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
        _write_parquet(to_arrow(columns), tmp, self.provenance)
        os.replace(tmp, self.dir / f"part-{self.seq:06d}-{uuid.uuid4().hex[:8]}.parquet")
        self.seq += 1


def finish(out: Path, provenance: dict | None = None) -> int:
    """Merge the old table and the parts into ``out`` (atomically), recording ``provenance``; returns the row count."""
    table = existing(out)
    if table is None:
        write_table(to_arrow({c: [] for c in COLUMNS}), out, provenance)
        return 0
    write_table(table, out, provenance)
    shutil.rmtree(parts_dir(out), ignore_errors=True)
    return table.num_rows
