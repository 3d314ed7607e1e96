"""The valence rules: label list -> positive/negative/neutral without an LLM.

Every rule on hand-made lists, the valence table's own checks, and the agreement with a table of
real-looking AffectGPT label lists labelled by hand (``data/sentiment_lists.csv``: each row's
sentiment was written by a person with a reason, not produced by these rules).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from core.errors import InputError, WheelError
from features.labels import parse_openset
from scoring.sentiment import KINDS, SentimentRules, ValenceTable, default_valence_table
from scoring.wheel import EmotionWheel

HAND_LABELLED = Path(__file__).parent / "data" / "sentiment_lists.csv"


@pytest.fixture(scope="module")
def rules(wheel_dir) -> SentimentRules:
    return SentimentRules(EmotionWheel.load(wheel_dir))


def _decide(rules: SentimentRules, text: str) -> str:
    return rules.decide(parse_openset(text)).sentiment


# ---------------------------------------------------------------- the table


def test_packaged_table_covers_every_level1_word_with_a_reason(wheel_dir):
    table = ValenceTable.load()
    assert table.path == default_valence_table().resolve()
    wheel = EmotionWheel.load(wheel_dir)
    level1 = {w for grouping in wheel.groupings for w in grouping.values()}
    assert level1 == set(table.level1)  # every level-1 word, and nothing else, under kind level1
    assert len(table.labels) >= 100
    assert all(why.strip() for why in table.why.values())
    assert {kind for kind, _ in table.why} == set(KINDS)
    # Each level-1 valence as the wheels' subtrees read: anger, disgust, sadness, fear and
    # wheel 2's 'bad' negative; joy, power, peace and wheel 4's 'genius' positive; surprise neither.
    assert {w for w, v in table.level1.items() if v == 1} == {
        "happy", "joyful", "joy", "powerful", "peaceful", "genius"}
    assert {w for w, v in table.level1.items() if v == 0} == {"surprised"}


def test_table_errors_name_the_row(tmp_path, wheel_dir):
    good = default_valence_table().read_text(encoding="utf-8").splitlines()
    cases = {
        "bad valence": (good + ["gleeful,great,label,x"], "row 129: valence 'great'"),
        "bad kind": (good + ["gleeful,positive,word,x"], "row 129: kind 'word'"),
        "no why": (good + ["gleeful,positive,label,"], "row 129: 'gleeful' has no 'why'"),
        "twice": (good + ["calm,positive,label,again"], r"row 129: 'calm' \(label\) is listed twice"),
        "columns": (["word,valence,kind"], r"missing column\(s\) \['why'\]"),
    }
    assert len(good) == 128  # header + 127 entries: the row numbers above follow
    for i, (name, (lines, message)) in enumerate(cases.items()):
        path = tmp_path / f"t{i}.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with pytest.raises(InputError, match=message):
            ValenceTable.load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ValenceTable.load(tmp_path / "none.csv")
    # A wheel level-1 word without a valence is refused when the rules are built, naming it.
    path = tmp_path / "no-genius.csv"
    path.write_text("\n".join(line for line in good if not line.startswith("genius,")) + "\n", encoding="utf-8")
    with pytest.raises(WheelError, match="level-1 word 'genius' of wheel 4 has no valence"):
        SentimentRules(EmotionWheel.load(wheel_dir), ValenceTable.load(path))


# ---------------------------------------------------------------- one label


def test_label_rules_in_order(rules):
    v = rules.valence
    # 1. the table decides labels outside the wheels and those the wheels mislead on.
    assert (v("mixed").valence, v("mixed").rule) == (0, "table")
    assert (v("friendly").valence, v("friendly").rule) == (1, "table")
    assert (v("calm").valence, v("calm").rule) == (0, "table")  # the wheels say peaceful/joy
    assert (v("fear").valence, v("fear").rule) == (-1, "table")  # format.csv files it under fearless
    # 2. the wheels: the sign of the level-1 valences over the five wheels.
    assert (v("happy").valence, v("happy").rule) == (1, "wheels")
    assert (v("confused").valence, v("confused").rule) == (-1, "wheels")  # surprised, surprised, scared, sad, scared
    assert [rules.wheel.map_label("aroused", k) for k in range(1, 6)] == ["mad", "happy", None, None, None]
    assert (v("aroused").valence, v("aroused").rule) == (0, "wheels")  # one each way: no direction
    assert v("Happy ").label == "happy" and v("'Worried'").valence == -1
    # 3. negation: a positive flips, a negative or neutral becomes neutral; the table overrides.
    assert (v("not happy").valence, v("not happy").rule) == (-1, "negated")
    assert v("not at all happy").valence == -1 and v("isn't happy").valence == -1
    assert v("lack of confidence").valence == -1 and v("without hope").valence == -1
    assert (v("not sad").valence, v("no longer angry").valence, v("not surprised").valence) == (0, 0, 0)
    assert (v("not calm").valence, v("not calm").rule) == (-1, "table")
    assert (v("not bad").valence, v("not bad").rule) == (1, "table")
    assert v("no words").rule == "wheels"  # a wheel form that only looks negated
    # 4. hedges are dropped.
    assert v("slightly anxious").valence == v("anxious").valence == -1
    assert v("very happy").valence == 1 and v("a bit nervous").valence == -1
    # 5. a longer label is decided by the emotion words in it.
    assert (v("nervous about the exam").valence, v("nervous about the exam").rule) == (-1, "words")
    assert v("feeling happy about the result").valence == 1
    # 6. nothing known: no vote.
    assert (v("xyzzy").valence, v("xyzzy").rule) == (None, "unknown")
    assert v("not xyzzy").valence is None and v("").valence is None


# ---------------------------------------------------------------- a list


def test_list_rules(rules):
    d = rules.decide
    assert (d([]).sentiment, d([]).rule) == ("neutral", "empty list")
    assert d(["happy", "excited", "sad"]).sentiment == "positive"  # majority
    assert d(["happy", "worried", "sad"]).rule == "majority: 1 positive, 2 negative"
    tie = d(["happy", "sad"])
    assert (tie.sentiment, tie.rule) == ("positive", "tie 1:1: the first (happy) decides")
    assert d(["sad", "happy"]).sentiment == "negative"
    assert d(["surprised", "happy", "confused"]).sentiment == "positive"  # surprise casts no vote
    only = d(["calm", "surprised", "xyzzy"])
    assert (only.sentiment, only.rule) == ("neutral", "no label with a valence")
    assert d(["neutral"]).sentiment == "neutral" and d(["xyzzy"]).sentiment == "neutral"
    # A label repeated (in another spelling) counts once: one vote each way, the first decides.
    assert d(["sad", "Sad", "happy"]).sentiment == "negative"
    assert [x.label for x in d(["Sad", "sad ", "happy"]).labels] == ["sad", "happy"]
    assert d(["not happy", "relieved"]).sentiment == "negative"  # a tie: the first decides
    assert d(["happy", "not sad"]).sentiment == "positive"


def test_decisions_are_deterministic(wheel_dir):
    lists = [["happy", "sad"], ["calm"], ["not happy"], ["nervous about the exam", "excited"]]
    first = [SentimentRules(EmotionWheel.load(wheel_dir)).decide(x) for x in lists]
    again = [SentimentRules(EmotionWheel.load(wheel_dir)).decide(x) for x in lists]
    assert first == again


# ---------------------------------------------------------------- hand-labelled lists


def _hand_labelled() -> list[dict]:
    with open(HAND_LABELLED, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_agreement_with_hand_labelled_lists(rules, report_line):
    rows = _hand_labelled()
    assert len(rows) >= 200
    assert len({r["labels"] for r in rows}) == len(rows)  # no list twice
    assert all(r["sentiment"] in ("positive", "negative", "neutral") and r["why"].strip() for r in rows)
    agree = [rules.decide(parse_openset(r["labels"])).sentiment == r["sentiment"] for r in rows]
    polar = [a for a, r in zip(agree, rows) if r["sentiment"] != "neutral"]
    # Scoring counts a sentiment sample as positive or not: agreement on that split too.
    binary = [(rules.decide(parse_openset(r["labels"])).sentiment == "positive") == (r["sentiment"] == "positive")
              for r in rows]
    misses = [f"{r['labels']} hand={r['sentiment']} rules={rules.decide(parse_openset(r['labels'])).sentiment}"
              for a, r in zip(agree, rows) if not a]
    line = (f"valence rules vs {len(rows)} hand-labelled lists: {sum(agree)}/{len(rows)} agree "
            f"({100 * sum(agree) / len(rows):.1f} %); on the {len(polar)} positive/negative ones "
            f"{sum(polar)}/{len(polar)} ({100 * sum(polar) / len(polar):.1f} %); positive-or-not "
            f"{sum(binary)}/{len(rows)} ({100 * sum(binary) / len(rows):.1f} %)"
            + "".join(f"\n  differs: {m}" for m in misses))
    print(line)
    report_line(line)
    assert sum(agree) / len(rows) >= 0.95, line


def test_hand_labelled_lists_look_like_affectgpt_outputs():
    rows = _hand_labelled()
    texts = [r["labels"] for r in rows]
    assert "[]" in texts and "" in texts  # empty lists
    assert sum(t.startswith("[not ") or ", not " in t for t in texts) >= 5  # negations
    assert sum(len(parse_openset(t)) >= 3 for t in texts) >= 15  # longer lists
    assert sum(r["sentiment"] == s for r in rows for s in ("neutral",)) >= 30
