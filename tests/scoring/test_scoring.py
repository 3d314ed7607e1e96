"""MER-UniBench scoring: label parsing, the emotion wheels, the three metrics, output parsing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.errors import WheelError
from features.labels import labels_or_neutral, parse_openset
from scoring import metrics
from scoring.parse import (
    clean_response,
    format_openset,
    openset_prompt,
    parse_template,
    sentiment_prompt,
)
from scoring.wheel import (
    N_WHEELS,
    EmotionWheel,
    default_wheel_dir,
    level1_grouping,
    read_wheel_tree,
)


@pytest.fixture(scope="session")
def wheel(wheel_dir) -> EmotionWheel:
    return EmotionWheel.load(wheel_dir)


# ---------------------------------------------------------------- list text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[happy, relaxed]", ["happy", "relaxed"]),
        ("['Happy', 'relaxed']", ["happy", "relaxed"]),
        ('["happy","at a loss"]', ["happy", "at a loss"]),
        ("happy, relaxed", ["happy", "relaxed"]),
        ("[]", []),
        ("", []),
        (None, []),
        (float("nan"), []),
        (["Happy ", " sad", ""], ["happy", "sad"]),
        ("[ happy ,, ]", ["happy"]),
    ],
)
def test_parse_openset(text, expected):
    assert parse_openset(text) == expected


def test_labels_or_neutral():
    assert labels_or_neutral([]) == ["neutral"]
    assert labels_or_neutral(["sad"]) == ["sad"]


# ---------------------------------------------------------------- wheels


def test_wheel_load_is_cached(wheel_dir, wheel):
    assert EmotionWheel.load(wheel_dir) is wheel
    assert wheel.n_wheels == 5


def test_packaged_wheel_files_load():
    import scoring

    root = default_wheel_dir()
    assert root.parent == Path(scoring.__file__).parent  # inside the package, not beside the repo
    names = ["format.csv", "synonym.xlsx"] + [f"wheel{k}.xlsx" for k in range(1, N_WHEELS + 1)]
    assert all((root / n).is_file() for n in names + ["SOURCE.md", "LICENSE"])
    wheel = EmotionWheel.load()  # no folder given: the packaged files
    assert EmotionWheel.load("") is wheel and EmotionWheel.load(root) is wheel
    assert wheel.n_wheels == N_WHEELS == 5
    assert all(len(g) > 10 for g in wheel.groupings)
    # Literals from the release's own mapping (my_affectgpt/evaluation/wheel.py: func_backward_case3, lines
    # 371-383, over read_format2raws 209-229 and read_candidate_synonym_merge 87-130) run on these files.
    assert [wheel.map_label("happy", k) for k in range(1, 6)] == [
        "happy", "happy", "joyful", "joy", "powerful"
    ]


def test_each_wheel_level_maps_to_its_level1_word(wheel):
    # wheel1.xlsx rows 2-5: "Mad" (level1), "Aggressive" (level2, row 4), "Hostile" (level3, row 5, blank
    # level1/level2 cells repeat the row above); row 38 starts "Happy"... the release gives the same (wheel.py:338-360).
    assert wheel.map_label("mad", 1) == "mad"
    assert wheel.map_label("aggressive", 1) == "mad"
    assert wheel.map_label("hostile", 1) == "mad"
    assert wheel.map_label("sad", 1) == "sad"
    assert [wheel.map_label("hostile", k) for k in range(1, 6)] == ["mad", "angry", "mad", "anger", "mad"]  # release


def test_first_sorted_synonym_target_decides(wheel):
    # "offended" sits under "Mad" in wheel1 (wheel1.xlsx row 2, a level-2 word), but the release takes the
    # alphabetically first synonym target present in the wheel (wheel.py:378-382): format.csv lines 807-808
    # give the bases offended and offensive; synonym.xlsx row 154 lists "offended" among the synonyms of
    # "disgusted" (runs 2, 5, 7), so "disgusted" is a target, and it is the first sorted target in wheel1
    # ("detestable" sorts first but is in no wheel1 row), a level-1 word there (wheel1.xlsx row 18).
    # The release's code gives disgusted, disgusted, mad, sad, mad over wheels 1-5.
    assert [wheel.map_label("offended", k) for k in range(1, 6)] == ["disgusted", "disgusted", "mad", "sad", "mad"]


def test_synonyms_and_forms_map_together(wheel):
    for k in range(1, 6):
        assert (
            wheel.map_label("joyful", k)
            == wheel.map_label("happy", k)
            == wheel.map_label("happiness", k)
        )
    assert [wheel.map_label("happy", k) for k in range(1, 6)] == [
        "happy",
        "happy",
        "joyful",
        "joy",
        "powerful",
    ]
    assert wheel.map_label("  Happy ", 1) == "happy"


def test_unknown_neutral_and_multiword(wheel):
    assert wheel.map_label("xyzzy", 1) is None
    assert all(wheel.map_label("neutral", k) is None for k in range(1, 6))
    assert wheel.map_label("at a loss", 1) == "surprised"  # a multi-word label
    assert wheel.map_label("at a loss", 2) is None  # known form, but nothing of it in wheel 2
    assert wheel.map_labels(["happy", "joyful", "xyzzy", "sad"], 1) == {"happy", "sad"}
    with pytest.raises(ValueError, match="1..5"):
        wheel.map_label("happy", 6)


def test_wheel_tree_repeats_blank_cells(tmp_path):
    path = tmp_path / "w.xlsx"
    pd.DataFrame(
        {
            "level1": ["Mad", None, None, "Sad"],
            "level2": [" Hurt ", None, "Hostile", None],
            "level3": ["a", "b", "c", "d"],
        }
    ).to_excel(path, index=False)
    tree = read_wheel_tree(path)
    # level2 carries over into the next level-1 subtree, as in the reference reader.
    assert tree == {"mad": {"hurt": ["a", "b"], "hostile": ["c"]}, "sad": {"hostile": ["d"]}}
    grouping = level1_grouping(tree)
    assert grouping["a"] == "mad" and grouping["d"] == "sad"
    assert grouping["hostile"] == "sad"  # listed twice: the later subtree wins


def test_wheel_errors_name_the_file_and_column(tmp_path, wheel_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EmotionWheel.load(tmp_path / "nope")
    for f in wheel_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "wheel3.xlsx").unlink()
    with pytest.raises(FileNotFoundError, match="wheel3.xlsx is missing"):
        EmotionWheel.load(tmp_path)
    pd.DataFrame({"level1": ["a"], "level2": ["b"]}).to_excel(tmp_path / "wheel3.xlsx", index=False)
    with pytest.raises(WheelError, match=r"wheel3.xlsx lacks column\(s\) \['level3'\]"):
        EmotionWheel.load(tmp_path)


# ---------------------------------------------------------------- metrics


def test_ov_fscore_hand_computed(wheel):
    gold = {"s1": ["happy", "sad"], "s2": ["neutral"], "s3": ["angry"], "s4": ["xyzzy"]}
    pred = {"s1": "[joyful]", "s2": "[sad]", "s3": [], "s4": ["happy"], "extra": ["sad"]}
    out = metrics.ov_fscore(gold, pred, wheel)
    # Per wheel: s2 and s4 skipped (gold maps to nothing); s1 P=1 R=1/2; s3 empty prediction P=R=0.
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.25)
    assert out["f"] == pytest.approx(1 / 3)
    assert [w["n"] for w in out["per_wheel"]] == [2] * 5


def test_ov_fscore_out_of_vocabulary_prediction_words_are_dropped(wheel):
    out = metrics.ov_fscore({"a": ["happy"]}, {"a": ["happy", "xyzzy", "qwertyish"]}, wheel)
    assert out["f"] == out["precision"] == out["recall"] == pytest.approx(1.0)


def test_ov_fscore_all_zero_and_no_scorable_sample(wheel):
    out = metrics.ov_fscore({"a": ["happy"]}, {"a": ["sad"]}, wheel)
    assert out["f"] == 0.0
    with pytest.raises(ValueError, match="wheel 5"):  # "surprise" has no place in wheel 5
        metrics.ov_fscore({"a": ["surprise"]}, {"a": ["surprise"]}, wheel)


def test_missing_prediction_is_an_error(wheel):
    with pytest.raises(metrics.MissingPredictionsError, match="1 of 2"):
        metrics.ov_fscore({"a": ["happy"], "b": ["sad"]}, {"a": ["happy"]}, wheel)


def test_hit_rate_hand_computed(wheel):
    gold = {"a": "happy", "b": "neutral", "c": "sad", "d": "surprise"}
    pred = {"a": ["joyful", "angry"], "b": ["neutral"], "c": ["happy"], "d": "[surprised]"}
    out = metrics.hit_rate(gold, pred, wheel)
    # Wheels 1-4: a hit, c miss, d hit (b, neutral, skipped) -> 2/3; wheel 5 also skips d -> 1/2.
    assert [w["hit_rate"] for w in out["per_wheel"]] == pytest.approx([2 / 3] * 4 + [1 / 2])
    assert out["hit_rate"] == pytest.approx(19 / 30)
    assert [w["n"] for w in out["per_wheel"]] == [3, 3, 3, 3, 2]


def test_sentiment_hand_computed():
    gold = {"a": 1.2, "b": -0.4, "c": 0.0, "d": 2.0, "e": -1.0}
    pred = {"a": "positive", "b": "negative", "c": "positive", "d": "neutral", "e": "Positive"}
    out = metrics.sentiment(gold, pred)
    # c dropped (gold 0); "Positive" is not the exact word: e counts as not positive (right here).
    assert out["n"] == 4
    assert out["acc"] == pytest.approx(3 / 4)
    assert out["waf"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert metrics.sentiment_value(["positive"]) == 1
    assert metrics.sentiment_value(None) == 0


def test_select_best_checkpoint():
    scores = {
        "checkpoint_000025_loss_0.9.npz": {"MER2023": 0.99},  # outside 30..60
        "checkpoint_000030_loss_0.8.npz": {"MER2023": 0.70, "MELD": 0.50},
        "checkpoint_000035_loss_0.7.npz": {"MER2023": 0.75, "MELD": 0.50},
        40: {"MER2023": 0.72, "MELD": 0.55},
    }
    best = metrics.select_best_checkpoint(scores)
    assert best["MER2023"] == {
        "checkpoint": "checkpoint_000035_loss_0.7.npz",
        "epoch": 35,
        "score": 0.75,
    }
    assert best["MELD"]["epoch"] == 40
    assert metrics.select_best_checkpoint(scores, epochs=None)["MER2023"]["epoch"] == 25


# ---------------------------------------------------------------- output parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The character's emotional state is happy, relaxed.", ["happy", "relaxed"]),
        ("The character's emotional state is happy, relaxed.###", ["happy", "relaxed"]),
        ("The character's emotional state is sad###In the text", ["sad"]),
        (
            "the character's emotional states are 'happy' and [relaxed]. In the text, he smiles.",
            ["happy", "relaxed"],
        ),
        (
            "The Character’s Emotional State Is: Happy, Surprised, and at a loss",
            ["happy", "surprised", "at a loss"],
        ),
        ('"The character\'s emotional state is ["worried", "nervous"]."', ["worried", "nervous"]),
        ("The character's emotional state is [].", []),
        ("In the text, the man says he is tired; his emotional state is sad.", None),
        (
            "The character's emotional state is happy, and he seems to be talking about his job.",
            None,
        ),
        ("", None),
    ],
)
def test_parse_template(text, expected):
    assert parse_template(text) == expected


def test_reference_prompts_and_cleanup():
    assert format_openset(["happy", "sad"]) == "[happy, sad]"
    p = openset_prompt("He smiles.")
    assert p.endswith("Input: He smiles.; Output: ") and "Output: [happy, sad, angry] Input:" in p
    s = sentiment_prompt("[happy]")
    assert s.startswith("Please act as an expert in the field of emotions.             We provide")
    assert s.endswith("            Input: [happy]; Output: ")
    assert clean_response("  Output: [happy,\n sad] ") == "[happy, sad]"
