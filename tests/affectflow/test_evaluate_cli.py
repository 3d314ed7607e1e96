"""`affectflow evaluate` end to end on small synthetic label and prediction files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectflow.cli import main
from scoring.evaluate import NeedsExtractorError, evaluate, load_predictions
from scoring.unibench import DATASETS, get_dataset, load_gold
from scoring.wheel import default_wheel_dir

WHEEL = default_wheel_dir()


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["evaluate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def ov_files(tmp_path):
    gt = tmp_path / "ovlabel.csv"
    pd.DataFrame(
        {"name": ["s1", "s2", "s3"], "openset": ["[happy, sad]", "[]", "['angry']"]}
    ).to_csv(gt, index=False)
    pred = tmp_path / "pred.csv"
    pd.DataFrame(
        {
            "name": ["s1", "s2", "s3"],
            "text": [
                "The character's emotional state is joyful.",
                "The character's emotional state is neutral.",
                "The character's emotional state is angry.###",
            ],
        }
    ).to_csv(pred, index=False)
    return gt, pred


@pytest.fixture
def mer_files(tmp_path):
    gt = tmp_path / "label-6way.npz"
    corpus = {
        "a": {"emo": "happy", "val": 1.0},
        "b": {"emo": "neutral", "val": 0.0},
        "c": {"emo": "sad", "val": -1.0},
    }
    np.savez(gt, train_corpus={}, test1_corpus=corpus)
    pred = tmp_path / "checkpoint_000030_loss_0.5-openset.npz"
    np.savez_compressed(pred, filenames=["a", "b", "c"], fileitems=["[joyful]", "[sad]", "[happy]"])
    return gt, pred


@pytest.fixture
def mosi_files(tmp_path):
    gt = tmp_path / "label.npz"
    np.savez(gt, test_corpus={"a": {"val": 1.0}, "b": {"val": -2.0}, "c": {"val": 0.0}})
    pred = tmp_path / "sent.csv"
    pd.DataFrame(
        {"name": ["a", "b", "c"], "sentiment": ["positive", "negative", "positive"]}
    ).to_csv(pred, index=False)
    return gt, pred


def test_ov_set_json(capsys, ov_files):
    gt, pred = ov_files
    code, out, err = run_cli(
        capsys,
        "--dataset",
        "OVMERDPlus",
        "--gt",
        str(gt),
        "--predictions",
        str(pred),
        "--wheel",
        str(WHEEL),
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    # s2 (empty gold -> neutral) is skipped; s1 P=1 R=1/2, s3 P=R=1 on every wheel.
    assert result["scores"]["precision"] == pytest.approx(1.0)
    assert result["scores"]["recall"] == pytest.approx(0.75)
    assert result["score"] == pytest.approx(6 / 7)
    assert result["counts"] == {"gold": 3, "llm_calls": 0, "predictions": 3}


def test_hit_rate_set_json_from_reference_npz(capsys, mer_files):
    gt, pred = mer_files
    code, out, err = run_cli(
        capsys,
        "--dataset",
        "mer2023",
        "--gt",
        str(gt),
        "--predictions",
        str(pred),
        "--set",
        f"score.wheel_dir={WHEEL}",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["dataset"] == "MER2023" and result["metric"] == "hit_rate"
    assert result["score"] == pytest.approx(0.5)  # a hit, c miss, b (neutral) skipped


def test_sentiment_set_json(capsys, mosi_files):
    gt, pred = mosi_files
    code, out, err = run_cli(
        capsys, "--dataset", "CMUMOSI", "--gt", str(gt), "--predictions", str(pred), "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["scores"] == {"acc": 1.0, "n": 2, "waf": 1.0}


def test_table_output_and_determinism(capsys, ov_files):
    gt, pred = ov_files
    args = (
        "--dataset",
        "OVMERDPlus",
        "--gt",
        str(gt),
        "--predictions",
        str(pred),
        "--wheel",
        str(WHEEL),
    )
    code, table, _ = run_cli(capsys, *args)
    assert code == 0 and table.startswith("OVMERDPlus (ov, 3 samples)") and "wheel5" in table
    first = run_cli(capsys, *args, "--json")[1]
    second = run_cli(capsys, *args, "--json")[1]
    assert first.encode() == second.encode()


def test_errors_are_clear(capsys, tmp_path, mosi_files):
    gt, pred = mosi_files
    code, _, err = run_cli(
        capsys, "--dataset", "CMUMOSI", "--gt", str(gt), "--predictions", str(tmp_path / "no.csv")
    )
    assert code == 2 and "no.csv does not exist" in err
    code, _, err = run_cli(capsys, "--dataset", "NOPE", "--gt", str(gt), "--predictions", str(pred))
    assert code == 2 and "unknown MER-UniBench dataset 'NOPE'" in err
    code, _, err = run_cli(
        capsys,
        "--dataset",
        "CMUMOSI",
        "--gt",
        str(tmp_path / "none.npz"),
        "--predictions",
        str(pred),
    )
    assert code == 2 and "none.npz does not exist" in err
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"name": ["a"], "label": ["x"]}).to_csv(bad, index=False)
    code, _, err = run_cli(
        capsys, "--dataset", "CMUMOSI", "--gt", str(gt), "--predictions", str(bad)
    )
    assert code == 2 and "needs an 'openset', 'text' or 'sentiment' column" in err


def test_evaluate_without_wheel_reads_the_packaged_files(capsys, ov_files, tmp_path):
    gt, pred = ov_files
    args = ("--dataset", "OVMERDPlus", "--gt", str(gt), "--predictions", str(pred), "--json")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert json.loads(out)["score"] == pytest.approx(6 / 7)
    assert run_cli(capsys, *args, "--wheel", str(WHEEL))[1] == out
    # --wheel still overrides the packaged files.
    code, _, err = run_cli(capsys, *args, "--wheel", str(tmp_path / "elsewhere"))
    assert code == 2 and "elsewhere does not exist" in err


def test_free_text_without_extractor_says_how_many(capsys, tmp_path, mosi_files):
    gt, _ = mosi_files
    pred = tmp_path / "free.csv"
    pd.DataFrame(
        {
            "name": ["a", "b", "c"],
            "text": ["In the text, he smiles.", "The character's emotional state is sad.", "x"],
        }
    ).to_csv(pred, index=False)
    # With the LLM path for sentiment, every label list needs the extractor.
    code, _, err = run_cli(
        capsys, "--dataset", "CMUMOSI", "--gt", str(gt), "--predictions", str(pred),
        "--set", "score.sentiment=llm",
    )
    assert code == 2 and "3 of 3 CMUMOSI predictions carry emotion labels" in err
    # With the rules (the default) only the free text does, and the error offers --extract rules.
    code, _, err = run_cli(
        capsys, "--dataset", "CMUMOSI", "--gt", str(gt), "--predictions", str(pred)
    )
    assert code == 2 and "2 of 3 predictions are free text" in err and "--extract rules" in err
    with pytest.raises(NeedsExtractorError, match="2 of 3 predictions are free text"):
        evaluate("MER2023", _mer_gt(tmp_path), pred, WHEEL)
    # --extract rules: the free text's emotion words are spotted, and the output says so.
    code, out, err = run_cli(
        capsys, "--dataset", "CMUMOSI", "--gt", str(gt), "--predictions", str(pred), "--extract", "rules"
    )
    assert code == 0, err
    assert "2 free-text outputs were scored by emotion words spotted in the text (--extract rules)" in out
    assert "3 label lists were mapped to a sentiment by the valence rules" in out


def _mer_gt(tmp_path: Path) -> Path:
    gt = tmp_path / "mer-label.npz"
    np.savez(gt, test1_corpus={n: {"emo": "happy", "val": 1.0} for n in "abc"})
    return gt


def test_missing_predictions(tmp_path, mosi_files):
    gt, _ = mosi_files
    pred = tmp_path / "p.csv"
    pd.DataFrame({"name": ["a"], "sentiment": ["positive"]}).to_csv(pred, index=False)
    with pytest.raises(ValueError, match="2 of 3 CMUMOSI gold samples have no prediction"):
        evaluate("CMUMOSI", gt, pred, None)


def test_iemocap_gold_uses_session_5_and_index_names(tmp_path):
    gt = tmp_path / "label_4way.npz"
    np.savez(
        gt, whole_corpus={"Ses01F_a": {"emo": 0}, "Ses05F_b": {"emo": 0}, "Ses05M_c": {"emo": 3}}
    )
    assert load_gold("iemocap", gt) == {"Ses05F_b": "happy", "Ses05M_c": "anger"}
    pred = tmp_path / "p.parquet"
    pd.DataFrame(
        {"name": ["Ses05F_b", "Ses05M_c"], "openset": ["[happy]", "[angry]"]}
    ).to_parquet(pred)
    assert evaluate("IEMOCAPFour", gt, pred, WHEEL)["score"] == pytest.approx(1.0)


def test_unibench_table():
    assert len(DATASETS) == 9
    assert get_dataset("iemocap").video_folder == "subvideo-tgt"
    assert get_dataset("CMU-MOSEI").video_folder == "subvideo_new"
    assert {d.metric for d in DATASETS.values()} == {"hit_rate", "sentiment", "ov"}


def test_load_predictions_forms(tmp_path):
    np.savez(
        tmp_path / "checkpoint_000040.npz",
        name2reason={"a": "The character's emotional state is sad."},
    )
    assert load_predictions(tmp_path / "checkpoint_000040.npz")["a"].text.endswith("sad.")
    np.savez(tmp_path / "x-openset-sentiment.npz", filenames=["a"], fileitems=["negative"])
    assert load_predictions(tmp_path / "x-openset-sentiment.npz")["a"].sentiment == "negative"


# ---------------------------------------------------------------- LLM path (tiny Qwen2)


@pytest.fixture(scope="module")
def tiny_llm(tiny_models) -> Path:
    """The session's tiny Qwen2 (built by the tests, never read from the working tree)."""
    return Path(tiny_models["llm"])


def test_llm_extractor_batched_greedy_is_deterministic(tiny_llm):
    from scoring.parse import LLMExtractor, openset_prompt

    ex = LLMExtractor(tiny_llm, batch_size=3, max_new_tokens=6)
    texts = ["In the text, he smiles.", "She shouts angrily at the man and leaves the room.", "ok"]
    batched = ex.to_openset(texts)
    assert len(batched) == 3 and all(isinstance(t, str) for t in batched)
    # Left padding: a sample's answer does not depend on its batch mates.
    assert [ex.generate([openset_prompt(t)])[0] for t in texts] == batched
    assert ex.to_openset(texts) == batched


def test_evaluate_with_extractor(tmp_path, tiny_llm, mosi_files):
    from scoring.parse import LLMExtractor

    ex = LLMExtractor(tiny_llm, batch_size=4, max_new_tokens=4)
    pred = tmp_path / "free.csv"
    pd.DataFrame(
        {
            "name": ["a", "b", "c"],
            "text": ["In the text, he smiles.", "The character's emotional state is sad.", "x"],
        }
    ).to_csv(pred, index=False)
    result = evaluate("CMUMOSI", mosi_files[0], pred, WHEEL, extractor=ex, sentiment="llm")
    assert (
        result["counts"]["llm_calls"] == 2 + 3
    )  # two free texts listed, three lists mapped to sentiment
    assert result["extraction"]["labels"] == {"llm": 2, "template": 1}
    assert result["extraction"]["sentiment"] == {"llm": 3}
    # The default maps the lists by the rules: only the free texts need the extractor.
    ruled = evaluate("CMUMOSI", mosi_files[0], pred, WHEEL, extractor=ex)
    assert ruled["counts"]["llm_calls"] == 2 and ruled["extraction"]["sentiment"] == {"rules": 3}
    assert 0.0 <= result["score"] <= 1.0


# ---------------------------------------------------------------- --results (a release-style folder)


@pytest.fixture
def release(tmp_path):
    from tests.scoring.test_results import MODEL, mer_lists, write_checkpoint, write_gold

    gold = write_gold(tmp_path / "unibench")
    out = tmp_path / "output"
    for epoch, right in ((25, 4), (30, 2), (35, 3), (40, 3)):
        write_checkpoint(out / "results-mer2023" / MODEL, epoch, mer_lists(right))
    write_checkpoint(out / "results-cmumosi" / MODEL, 30, {"p1": "[happy]", "p2": "[sad]", "p3": "[calm, content]",
                                                           "p4": "[not happy]", "p5": "[]"})
    return out, gold


def test_results_folder_table_and_json(capsys, release, tmp_path):
    out, gold = release
    code, printed, err = run_cli(capsys, "--results", str(out), "--unibench-root", str(gold))
    assert code == 0, err
    # One row per checkpoint, the best of epochs 30..60 in bold (35 and 40 tie: the earlier wins).
    assert "| `checkpoint_000035_loss_0.500.npz` | 35 | **75.00** |" in printed
    assert "| `checkpoint_000040_loss_0.500.npz` | 40 | 75.00 |" in printed
    assert "| `checkpoint_000025_loss_0.500.npz` | 25 | 100.00 |" in printed  # outside 30..60: not the best
    assert "| best (epochs 30–60) |  | 75.00 | 100.00 | 87.50 |" in printed
    assert "| best epoch |  | 35 | 30 |  |" in printed and "| paper |  | 78.54 | 81.30 |  |" in printed
    assert "| Δ |  | -3.54 | +18.70 |  |" in printed
    assert "valence rules" in printed and f"wrote {out / 'scores.json'}" in printed
    summary = json.loads((out / "scores.json").read_text())
    assert summary["best"]["MER2023"]["epoch"] == 35 and summary["best"]["CMUMOSI"]["score"] == 1.0
    assert "rows" not in summary["datasets"]["MER2023"]["checkpoints"]["checkpoint_000030_loss_0.500.npz"]
    # --all-epochs, --out, --rows and --json.
    target, rows = tmp_path / "s.json", tmp_path / "rows.csv"
    code, printed, err = run_cli(capsys, "--results", str(out), "--gt", str(gold), "--all-epochs",
                                 "--out", str(target), "--rows", str(rows), "--json")
    assert code == 0, err
    assert json.loads(printed.rsplit("\nwrote", 1)[0])["best"]["MER2023"]["epoch"] == 25
    assert json.loads(target.read_text())["epochs"] is None
    table = pd.read_csv(rows, keep_default_na=False)
    assert len(table) == 4 * 4 + 5 and set(table["labels_from"]) == {"released"}
    mosi = table[table["dataset"] == "CMUMOSI"].set_index("name")
    assert mosi.loc["p4", "sentiment"] == "negative" and mosi.loc["p4", "sentiment_from"] == "rules"
    assert mosi.loc["p5", "sentiment_rule"] == "empty list"
    # Determinism: the same folder gives the same JSON bytes.
    run_cli(capsys, "--results", str(out), "--gt", str(gold), "--all-epochs", "--out", str(tmp_path / "t.json"))
    assert (tmp_path / "t.json").read_bytes() == target.read_bytes()


def test_results_folder_errors(capsys, release, tmp_path):
    import os

    from scoring.results import openset_path
    from tests.scoring.test_results import MODEL

    out, gold = release
    code, _, err = run_cli(capsys, "--results", str(out))
    assert code == 2 and "--gt ROOT" in err
    code, _, err = run_cli(capsys, "--results", str(out), "--gt", str(gold), "--predictions", "x.csv")
    assert code == 2 and "leave out --predictions" in err
    code, _, err = run_cli(capsys, "--gt", str(gold))
    assert code == 2 and "--dataset, --predictions" in err
    code, _, err = run_cli(capsys, "--results", str(tmp_path / "nowhere"), "--gt", str(gold))
    assert code == 2 and "nowhere does not exist" in err
    # A missing -openset.npz: the error names it.
    ckpt = out / "results-mer2023" / MODEL / "checkpoint_000040_loss_0.500.npz"
    openset_path(ckpt).unlink()
    code, _, err = run_cli(capsys, "--results", str(out), "--gt", str(gold))
    assert code == 2 and "checkpoint_000040_loss_0.500-openset.npz are missing" in err
    # A pickle that would run a command is refused, and the command never runs.
    marker = tmp_path / "pwned"

    class SystemCall:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.savez(openset_path(ckpt), filenames=np.array(["m1"]), fileitems=np.array([SystemCall()], dtype=object))
    code, _, err = run_cli(capsys, "--results", str(out), "--gt", str(gold))
    assert code == 2 and "refused to unpickle global" in err and "system" in err
    assert not marker.exists()
