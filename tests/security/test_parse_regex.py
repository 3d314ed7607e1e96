"""Finding 9: the template split regex was quadratic in a run of spaces (40k spaces: 48 s).

The expected items are written by hand: the template's items split at ``,`` ``;`` ``&`` "and"
"or", each stripped; a run of spaces inside one item is part of it."""

from __future__ import annotations

import time

from scoring.parse import template_items

TEMPLATE = "The character's emotional state is "


def test_a_run_of_40k_spaces_parses_in_linear_time():
    text = TEMPLATE + "a" + " " * 40_000 + "b."
    t0 = time.perf_counter()
    items = template_items(text)
    elapsed = time.perf_counter() - t0
    assert items == ["a" + " " * 40_000 + "b"]
    assert elapsed < 0.5, f"40k spaces took {elapsed:.2f} s (quadratic backtracking)"


def test_separators_still_split_with_any_spacing():
    text = TEMPLATE + "happy ,  sad and   angry; or calm & tense."
    assert template_items(text) == ["happy", "sad", "angry", "calm", "tense"]
    assert template_items(TEMPLATE + "brand, forlorn.") == ["brand", "forlorn"]  # 'and'/'or' inside words stay
