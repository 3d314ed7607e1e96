"""Labels out of outputs without an LLM: run-on templated items, word spotting, and the record of
where each scored row's labels and sentiment came from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.evaluate import NeedsExtractorError, Prediction, evaluate, write_rows
from scoring.parse import parse_template, runon_labels, spot_emotions, spotting_stopwords, template_items
from scoring.wheel import EmotionWheel

T = "The character's emotional state is {}."


@pytest.fixture(scope="module")
def wheel(wheel_dir) -> EmotionWheel:
    return EmotionWheel.load(wheel_dir)


def test_runon_items_keep_their_emotion_words(wheel):
    text = T.format("confused, anxious, helpless, unable to make a decision")
    assert parse_template(text) is None  # the strict parse refuses it, as before
    assert template_items(text)[-1] == "unable to make a decision"
    assert runon_labels(text, wheel) == (["confused", "anxious", "helpless"], 1)
    text = T.format("nervous, not feeling very happy about the result of the meeting")
    assert runon_labels(text, wheel) == (["nervous", "not happy"], 1)
    text = T.format("calm, slightly worried about what his boss might say next")
    assert runon_labels(text, wheel) == (["calm", "worried"], 1)  # 'might' is no emotion here
    # Short items are kept as they are; a templated output without long items is not run-on.
    assert runon_labels(T.format("happy, relaxed"), wheel) == (["happy", "relaxed"], 0)
    assert runon_labels("In the text, he smiles.", wheel) is None


def test_spotting_skips_ordinary_words_and_keeps_negation(wheel):
    text = ("In the text, the man says he is tired; his emotional state is sad. His facial expression "
            "is relaxed, but he does not seem happy, and he is not at all worried.")
    assert spot_emotions(text, wheel) == ["tired", "sad", "relaxed", "not happy", "not worried"]
    stop = spotting_stopwords()
    assert {"emotional", "facial", "strong", "person"} <= stop
    # Every stop word is a wheel form that maps somewhere (else it would not need stopping).
    assert all(any(wheel.map_label(w, k) for k in range(1, 6)) for w in stop)
    # The longest wheel form wins, and a negator does not reach past an emotion word.
    assert spot_emotions("He was at ease, not angry, then happy.", wheel) == ["at ease", "not angry", "happy"]
    assert spot_emotions("I don't care anymore.", wheel) == ["don’t care"]  # the wheels spell it with ’
    assert spot_emotions("She doesn't care.", wheel) == ["not care"]
    assert spot_emotions("", wheel) == [] and spot_emotions(None, wheel) == []


@pytest.fixture
def mosi(tmp_path):
    gt = tmp_path / "label.npz"
    np.savez(gt, test_corpus={"a": {"val": 1.0}, "b": {"val": -2.0}, "c": {"val": 0.5}, "d": {"val": -1.0}})
    return gt


def test_evaluate_records_each_rows_path(mosi, wheel_dir):
    preds = {
        "a": Prediction(text=T.format("happy, excited")),
        "b": Prediction(text=T.format("confused, anxious, helpless, unable to make a decision")),
        "c": Prediction(openset="[calm, content]"),
        "d": Prediction(sentiment="negative"),
    }
    result = evaluate("CMUMOSI", mosi, preds, wheel_dir)
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["a"] == {"name": "a", "labels": ["happy", "excited"], "labels_from": "template",
                         "sentiment": "positive", "sentiment_from": "rules",
                         "sentiment_rule": "calibration: the reference's answer for this list (9 rows)"}
    assert rows["b"]["labels"] == ["confused", "anxious", "helpless"] and rows["b"]["labels_from"] == "runon"
    assert rows["b"]["sentiment"] == "negative"
    assert rows["c"]["labels_from"] == "given" and rows["c"]["sentiment"] == "positive"
    assert rows["d"] == {"name": "d", "sentiment": "negative", "sentiment_from": "given"}
    assert result["extraction"] == {"extract": "llm", "labels": {"given": 1, "runon": 1, "template": 1},
                                    "sentiment": {"given": 1, "rules": 3}, "sentiment_mode": "rules"}
    assert result["counts"]["llm_calls"] == 0 and result["scores"]["acc"] == 1.0


def test_free_text_needs_the_extractor_or_extract_rules(mosi, wheel_dir, tmp_path):
    preds = {n: Prediction(text=T.format("happy")) for n in "acd"}
    preds["b"] = Prediction(text="In the text, he shouts; he is clearly angry and upset.")
    with pytest.raises(NeedsExtractorError, match="1 of 4 predictions are free text.*--extract rules"):
        evaluate("CMUMOSI", mosi, preds, wheel_dir)
    result = evaluate("CMUMOSI", mosi, preds, wheel_dir, extract="rules")
    b = next(r for r in result["rows"] if r["name"] == "b")
    assert (b["labels"], b["labels_from"], b["sentiment"]) == (["angry", "upset"], "spotted", "negative")
    assert result["extraction"]["labels"] == {"spotted": 1, "template": 3}
    # A run-on output on a hit-rate set: scored, and counted.
    gt = tmp_path / "label-6way.npz"
    np.savez(gt, test1_corpus={"x": {"emo": "sad", "val": -1.0}, "y": {"emo": "happy", "val": 1.0}})
    mer = evaluate("MER2023", gt, {"x": Prediction(text=T.format("sad, and he seems to be talking about his job")),
                                   "y": Prediction(text=T.format("happy"))}, wheel_dir)
    assert mer["score"] == pytest.approx(1.0) and mer["extraction"]["labels"] == {"runon": 1, "template": 1}
    with pytest.raises(ValueError, match="sentiment must be one of"):
        evaluate("MER2023", gt, {}, wheel_dir, sentiment="vote")


def test_templated_outputs_score_as_the_strict_parse(mosi, wheel_dir, tmp_path):
    """Templated outputs without long items take the same path as before (reference-equal)."""
    gt = tmp_path / "ov.csv"
    pd.DataFrame({"name": ["s1", "s2"], "openset": ["[happy, sad]", "[angry]"]}).to_csv(gt, index=False)
    texts = {"s1": T.format("joyful and sad"), "s2": T.format("angry")}
    by_text = evaluate("OVMERDPlus", gt, {n: Prediction(text=t) for n, t in texts.items()}, wheel_dir)
    # The lists the template states, written by hand: "joyful and sad" is two labels.
    lists = {"s1": "[joyful, sad]", "s2": "[angry]"}
    by_list = evaluate("OVMERDPlus", gt, {n: Prediction(openset=v) for n, v in lists.items()}, wheel_dir)
    assert by_text["scores"] == by_list["scores"]
    assert by_text["extraction"]["labels"] == {"template": 2}


def test_write_rows(tmp_path):
    path = write_rows([{"dataset": "MELD", "name": "=cmd", "labels": ["happy", "sad"], "labels_from": "template"}],
                      tmp_path / "r" / "rows.csv")
    df = pd.read_csv(path, keep_default_na=False)
    assert list(df.columns) == ["dataset", "checkpoint", "name", "labels", "labels_from", "sentiment",
                                "sentiment_from", "sentiment_rule"]
    assert df.loc[0, "name"] == "'=cmd" and df.loc[0, "labels"] == "[happy, sad]"  # spreadsheet-safe
