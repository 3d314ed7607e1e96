"""Label-text parsers shared by the corpus readers and the MER-UniBench scorer.

Open-vocabulary labels travel as a list written as text: ``[happy, relaxed]``,
``['happy', 'relaxed']``, ``[]`` or plain ``happy, relaxed``. One parser serves the
training readers and the scorer so that both see the same words.
"""

from __future__ import annotations

import math
import re
from typing import Any

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
