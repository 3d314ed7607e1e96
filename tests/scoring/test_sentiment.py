"""Label list -> positive/negative/neutral without an LLM: the valence rules and the calibrated mapping.

Every rule on hand-made lists, the valence table's own checks, a regression table of hand-labelled
lists, and the calibrated mapping against the reference scorer's own answers (the packaged
``scoring/calibration/sentiment/``: the released AffectGPT's label lists and what Qwen2.5-7B
answered for them, data from outside this code).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from core.errors import InputError, WheelError
from features.labels import parse_openset
from scoring.sentiment import (
    INTERCEPT,
    KINDS,
    CalibrationRow,
    SentimentMapping,
    SentimentRules,
    SentimentWeights,
    ValenceTable,
    calibrate,
    cross_set_agreement,
    default_valence_table,
    packaged_calibration,
    read_calibration,
    reference_answers,
    reference_word,
    summarise,
)
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
        "bad valence": (good + ["gleeful,great,label,x"], "row 134: valence 'great'"),
        "bad kind": (good + ["gleeful,positive,word,x"], "row 134: kind 'word'"),
        "no why": (good + ["gleeful,positive,label,"], "row 134: 'gleeful' has no 'why'"),
        "twice": (good + ["calm,positive,label,again"], r"row 134: 'calm' \(label\) is listed twice"),
        "columns": (["word,valence,kind"], r"missing column\(s\) \['why'\]"),
    }
    assert len(good) == 133  # header + 132 entries: the row numbers above follow
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
    # A tie goes to the last polar label: the reference LLM's answers for the released
    # [excited, anxious] and [nervous, excited] (scoring/calibration/sentiment/*.csv).
    tie = d(["happy", "sad"])
    assert (tie.sentiment, tie.rule) == ("negative", "tie 1:1: the last (sad) decides")
    assert d(["sad", "happy"]).sentiment == "positive"
    assert d(["surprised", "confused", "happy"]).sentiment == "positive"  # surprise casts no vote
    only = d(["calm", "surprised", "xyzzy"])
    assert (only.sentiment, only.rule) == ("neutral", "no label with a valence")
    assert d(["neutral"]).sentiment == "neutral" and d(["xyzzy"]).sentiment == "neutral"
    # A label repeated (in another spelling) counts once: one vote each way, the last decides.
    assert d(["sad", "happy", "Sad"]).sentiment == "positive"
    assert [x.label for x in d(["Sad", "sad ", "happy"]).labels] == ["sad", "happy"]
    assert d(["relieved", "not happy"]).sentiment == "negative"  # a tie: the last decides
    assert d(["happy", "not sad"]).sentiment == "positive"


def test_decisions_are_deterministic(wheel_dir):
    lists = [["happy", "sad"], ["calm"], ["not happy"], ["nervous about the exam", "excited"]]
    first = [SentimentRules(EmotionWheel.load(wheel_dir)).decide(x) for x in lists]
    again = [SentimentRules(EmotionWheel.load(wheel_dir)).decide(x) for x in lists]
    assert first == again


# ---------------------------------------------------------------- hand-labelled lists (regression)

# The rows where the rules now differ from the hand labels: each is a list whose two sides the
# rules count as a tie, and the tie now goes to the last polar label as the reference LLM's answers
# show (the table's reasons say "... leads" for the first).
TIE_NOW_TO_THE_LAST = {
    "[sarcastic, amused]": "positive", "[skeptical, curious]": "positive", "[nervous, excited]": "positive",
    "[excited, nervous]": "negative", "[happy, sad]": "negative", "[sad, happy]": "positive",
    "[happy, surprised, confused]": "negative", "[mocking, amused]": "positive", "[hopeful, nervous]": "negative",
    "[proud, emotional]": "negative", "[grateful, emotional]": "negative",
}


def _hand_labelled() -> list[dict]:
    with open(HAND_LABELLED, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_rules_on_hand_labelled_lists_regression(rules):
    """A regression test, not an accuracy figure: ``data/sentiment_lists.csv`` was written beside
    the rules (same commit; 34 reasons copied from valence.csv, ties labelled "the first feeling
    leads") and valence.csv entries were tuned to its rows. It pins the rules' per-label reading:
    every row agrees except the ties listed above, which now go to the last polar label."""
    rows = _hand_labelled()
    assert len(rows) >= 200
    assert len({r["labels"] for r in rows}) == len(rows)  # no list twice
    assert all(r["sentiment"] in ("positive", "negative", "neutral") and r["why"].strip() for r in rows)
    differs = {}
    for r in rows:
        decision = rules.decide(parse_openset(r["labels"]))
        if decision.sentiment != r["sentiment"]:
            differs[r["labels"]] = decision.sentiment
            assert decision.rule.startswith("tie ") and "the last" in decision.rule, (r["labels"], decision.rule)
    assert differs == TIE_NOW_TO_THE_LAST


def test_hand_labelled_lists_look_like_affectgpt_outputs():
    rows = _hand_labelled()
    texts = [r["labels"] for r in rows]
    assert "[]" in texts and "" in texts  # empty lists
    assert sum(t.startswith("[not ") or ", not " in t for t in texts) >= 5  # negations
    assert sum(len(parse_openset(t)) >= 3 for t in texts) >= 15  # longer lists
    assert sum(r["sentiment"] == s for r in rows for s in ("neutral",)) >= 30


# ---------------------------------------------------------------- the calibrated mapping

# The target, 0.98 on positive vs not both ways, is the floor: the stacked mapping reaches
# 0.9806 (CMU-MOSI -> CH-SIMS, 62 rows differ, 63 allowed) and 0.9806 (CH-SIMS -> CMU-MOSI, 93 rows,
# 96 allowed); the single regression before it (0.9791 / 0.9769) fails it. 3-class: 0.9678 / 0.9633.
CROSS_SET_FLOOR = 0.980
THREE_CLASS_FLOOR = 0.962


@pytest.fixture(scope="module")
def calibration() -> dict[str, list[CalibrationRow]]:
    return packaged_calibration()


@pytest.fixture(scope="module")
def mapping(wheel_dir) -> SentimentMapping:
    return SentimentMapping(EmotionWheel.load(wheel_dir))


def test_packaged_calibration_is_the_released_outputs(calibration):
    # Row counts and first rows as the release's SOURCE.md and CSVs give them.
    assert {k: len(v) for k, v in calibration.items()} == {"CMUMOSI": 4802, "SIMS": 3199}
    first = calibration["CMUMOSI"][0]
    assert (first.name, first.openset, first.llm_sentiment) == (
        "k5Y_838nuGo_1", "[unhappy, dissatisfied, disappointed, annoyed]", "negative")
    assert calibration["SIMS"][0].openset == "[anger, frustration, anxiety, pressure]"
    # The reference reads any other answer as neutral (evaluation.py, calculate_dimension_zeroshot).
    assert sum(r.llm_sentiment == "mixed" for r in calibration["CMUMOSI"]) == 34
    assert [reference_word(w) for w in ("positive", " Negative", "mixed", "neutral")] == [
        "positive", "negative", "neutral", "neutral"]


def test_calibration_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("dataset,name,openset\nX,a,[happy]\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c.csv: missing column\(s\) \['checkpoint', 'llm_sentiment'\]"):
        read_calibration(path)
    path.write_text("dataset,checkpoint,name,openset,llm_sentiment\nX,c,a,[happy],\n", encoding="utf-8")
    with pytest.raises(InputError, match="c.csv row 2: empty llm_sentiment"):
        read_calibration(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_calibration(tmp_path / "none.csv")


def test_calibrating_on_too_little_says_so(wheel_dir):
    rows = [CalibrationRow("X", "c", "a", "[happy]", "positive"), CalibrationRow("X", "c", "b", "[]", "neutral")]
    with pytest.raises(InputError, match=r"1 distinct label lists with answers \['positive'\]; needs at least 15"):
        calibrate({"X": rows}, EmotionWheel.load(wheel_dir))


def test_mapping_decisions_say_why(mapping):
    d = mapping.decide
    assert (d([]).sentiment, d([]).rule) == ("neutral", "empty list")
    # A released list: the reference's own answer (CMU-MOSI's first row, negative).
    seen = d(["unhappy", "dissatisfied", "disappointed", "annoyed"])
    assert seen.sentiment == "negative" and seen.rule.startswith("calibration: the reference's answer")
    # A list the calibration never saw: the weights, naming the labels that weighed most.
    new = d(["jubilant", "grateful", "xyzzy"])
    assert new.sentiment == "positive" and new.rule.startswith("weights: positive score +")
    assert "grateful" in new.rule and "jubilant" in new.rule and "ramped" in new.rule
    grim = d(["furious", "betrayed", "xyzzy"])
    assert grim.sentiment == "negative" and "negative score +" in grim.rule


def test_summaries_by_hand():
    # Scores 1, -2, 3: ramp 0, 1/2, 1 -> ramped 0 - 1 + 3 = 2; a single label's ramp is 1.
    assert summarise([1.0, -2.0, 3.0]) == {"sum": 2.0, "ramped": 2.0, "max": 3.0, "min": -2.0, "last": 3.0,
                                           "mean": pytest.approx(2 / 3), "positive_sum": 4.0, "negative_sum": -2.0}
    assert summarise([-0.5]) == {"sum": -0.5, "ramped": -0.5, "max": -0.5, "min": -0.5, "last": -0.5, "mean": -0.5,
                                 "positive_sum": 0.0, "negative_sum": -0.5}


def test_positive_score_is_the_shipped_numbers(mapping):
    """A new list's positive score, recomputed here from the shipped JSON alone: each label's stage-1
    score is the sum of its features' weights, stage 2 a linear function of their summaries."""
    import json

    from scoring.sentiment import default_weights_path

    shipped = json.loads(default_weights_path().read_text(encoding="utf-8"))
    items = mapping.items(["jubilant", "worried", "grateful"])
    scores = [sum(shipped["weights"].get(f, [0.0, 0.0])[0] * x for f, x in mapping.label_features(v).items())
              for v in items]
    # "worried" is negative by the wheels and its own label weight; "jubilant" and "grateful" positive.
    assert scores[1] < 0 < min(scores[0], scores[2])
    n = len(scores)
    z = {"sum": sum(scores), "ramped": sum(c * i / (n - 1) for i, c in enumerate(scores)), "max": max(scores),
         "min": min(scores), "last": scores[-1], "mean": sum(scores) / n,
         "positive_sum": scores[0] + scores[2], "negative_sum": scores[1]}
    expected = shipped["stage2"][INTERCEPT] + sum(shipped["stage2"][k] * z[k] for k in z)
    score, label_scores, _ = mapping.positive_score(items)
    assert label_scores == pytest.approx(scores) and score == pytest.approx(expected)
    decision = mapping.decide(["jubilant", "worried", "grateful"])
    assert (decision.sentiment == "positive") == (expected > 0)
    assert decision.rule.startswith(f"weights: positive score {expected:+.2f}")


def test_weights_round_trip(tmp_path):
    weights = SentimentWeights({"label:happy": 2.25}, {INTERCEPT: 0.5, "label:sad": 1.0},
                               ("A",), {"A->B": {"rows": 3}}, {"sum": 0.25, "last": -0.5, INTERCEPT: -1.0},
                               {"C": 0.2})
    back = SentimentWeights.load(weights.save(tmp_path / "w.json"))
    assert back.positive == {INTERCEPT: 0.0, "label:happy": 2.25, "label:sad": 0.0}
    assert back.negative == {INTERCEPT: 0.5, "label:happy": 0.0, "label:sad": 1.0}
    assert (back.calibrated_on, back.agreement) == (("A",), {"A->B": {"rows": 3}})
    assert (back.stage2, back.selection) == ({"sum": 0.25, "last": -0.5, INTERCEPT: -1.0}, {"C": 0.2})
    (tmp_path / "bad.json").write_text('{"weights": {}}', encoding="utf-8")
    with pytest.raises(InputError, match="bad.json: expected"):
        SentimentWeights.load(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text('{"weights": {}, "calibrated_on": [], "stage2": {"median": 1}}',
                                       encoding="utf-8")
    with pytest.raises(InputError, match=r"odd.json: .*'median'"):
        SentimentWeights.load(tmp_path / "odd.json")


def test_cross_set_agreement_floor(calibration, wheel_dir, report_line):
    """Calibrated on one set alone (weights and its answers), measured on every row of the other,
    both ways; the packaged weights (fitted on both) record the same figures."""
    wheel = EmotionWheel.load(wheel_dir)
    both = cross_set_agreement(calibration, wheel)
    line = "; ".join(f"{pair}: positive vs not {100 * a.positive_rate:.2f} %, 3-class {100 * a.three_class_rate:.2f} %"
                     f" ({a.rows} rows)" for pair, a in both.items())
    print(line)
    report_line("sentiment mapping vs the reference LLM, cross-set: " + line)
    assert set(both) == {"CMUMOSI->SIMS", "SIMS->CMUMOSI"}
    for pair, a in both.items():
        assert a.rows == len(calibration[pair.split("->")[1]])
        assert a.positive_rate >= CROSS_SET_FLOOR, line
        assert a.three_class_rate >= THREE_CLASS_FLOOR, line
    recorded = SentimentWeights.load().agreement
    assert {p: r["with_calibration_answers"] for p, r in recorded.items()} == {p: a.as_dict() for p, a in both.items()}


def test_packaged_answers_and_weights_cover_both_sets(calibration, mapping, wheel_dir):
    weights = SentimentWeights.load()
    assert weights.calibrated_on == ("CMUMOSI", "SIMS")
    # The shipped weights are what calibrating on both packaged sets gives (bench --write). The
    # choice of C is the candidate with the lowest recorded held-out loss (the floor test above runs
    # the choice itself); refitting with it keeps this test short.
    losses = weights.selection["inner_log_loss"]
    assert float(min(losses, key=losses.get)) == weights.selection["C"]
    refit = calibrate(calibration, EmotionWheel.load(wheel_dir), regularisation=weights.selection["C"])
    for shipped, fresh in ((weights.positive, refit.positive), (weights.negative, refit.negative)):
        assert set(fresh) <= set(shipped)  # the file lists each feature with both weights
        assert max(abs(shipped[f] - fresh.get(f, 0.0)) for f in shipped) < 1e-3
    assert weights.stage2 == pytest.approx(refit.stage2, abs=1e-3)
    assert mapping.answers == reference_answers(r for rows in calibration.values() for r in rows)
    # The reference LLM answers a repeated list the same way: the lookup keeps its answer.
    agree = sum(mapping.decide(parse_openset(r.openset)).sentiment == r.answer for rows in calibration.values()
                for r in rows)
    assert agree / sum(len(v) for v in calibration.values()) >= 0.999
