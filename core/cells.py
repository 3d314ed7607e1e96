"""Spreadsheet-safe text cells for the tables and reports we write (CSV, Markdown).

A spreadsheet runs a cell that begins with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return)
as a formula: a video named ``=HYPERLINK(...)`` would become a link in the label table. Such a
cell is written with a leading ``'`` (what spreadsheets themselves use to mean "text"); a cell that
already begins with quotes and then one of those gets one more, so reading back is exact.
"""

from __future__ import annotations

import re

TRIGGERS = "=+-@\t\r"
_FORMULA = re.compile(r"'*[=+\-@\t\r]")  # a trigger after any number of quotes


def safe_cell(value):
    """``value`` as written to a CSV or report cell (non-strings pass through)."""
    if isinstance(value, str) and _FORMULA.match(value):
        return "'" + value
    return value


def read_cell(value):
    """The value :func:`safe_cell` wrote (its added ``'`` removed)."""
    if isinstance(value, str) and value.startswith("'") and _FORMULA.match(value):
        return value[1:]
    return value
