"""The label table's CSV form: spreadsheet-safe cells that read back exactly."""

from __future__ import annotations

import csv

from core.cells import read_cell, safe_cell
from inference.table import COLUMNS, read_table, to_arrow, write_table


def test_formula_cells_are_neutralised_and_read_back(tmp_path):
    names = ["=HYPERLINK(\"http://x\",\"click\")", "+1", "-2", "@SUM(A1)", "'=quoted", "plain"]
    cols = {c: [""] * len(names) for c in COLUMNS}
    cols.update(name=names, task=["ov"] * len(names), text=["=cmd|' /C calc'!A0"] * len(names),
                labels=[["happy"], ["-sad"], None, [], ["=x"], ["calm"]], status=["ok"] * len(names),
                subtitle_cut=[0] * len(names))
    out = tmp_path / "labels.csv"
    write_table(to_arrow(cols), out)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert all(not r["name"].startswith(("=", "+", "-", "@")) for r in rows)
    assert all(r["text"].startswith("'=") for r in rows)
    back = read_table(out).to_pandas().set_index("name")
    assert sorted(back.index) == sorted(names)
    assert back.loc["=HYPERLINK(\"http://x\",\"click\")", "text"] == "=cmd|' /C calc'!A0"
    assert list(back.loc["+1", "labels"]) == ["-sad"] and list(back.loc["'=quoted", "labels"]) == ["=x"]


def test_safe_cell_round_trips():
    for value in ["=1", "'=1", "''=1", "x", "'x", "", "-", "\tx", 3]:
        assert read_cell(safe_cell(value)) == value
    assert safe_cell("=1") == "'=1" and safe_cell("x") == "x"


def test_a_parquet_that_is_not_a_label_table_is_named(tmp_path):
    import pandas as pd
    import pytest

    from core.errors import InputError

    other = tmp_path / "other.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(other)
    with pytest.raises(InputError, match=r"other\.parquet: not a label table \(missing column\(s\)"):
        read_table(other)
