"""Scoring a results folder in the release's layout: every checkpoint, the best of epochs 30..60.

The folders are written here as the release writes them: ``results-{dataset}/{model}/
checkpoint_{epoch:06d}_loss_{loss}.npz`` (``name2reason``) with ``-openset.npz`` and, for sentiment
sets, ``-openset-sentiment.npz`` beside each (``filenames``/``fileitems``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import inference.benchmark
from core.errors import InputError
from core.sections import ScoreConfig
from scoring import metrics, results
from scoring.results import find_results, score_results
from scoring.safe_npz import UnsafeNpzError

MODEL = "affectgpt_hybrid"
MER_GOLD = {"m1": "happy", "m2": "sad", "m3": "angry", "m4": "worried"}
MOSI_GOLD = {"p1": 1.5, "p2": -2.0, "p3": 0.8, "p4": -0.4, "p5": 0.0}
OV_GOLD = {"o1": "[happy, relaxed]", "o2": "[sad]", "o3": "[angry, annoyed]"}


def write_gold(root: Path) -> Path:
    (root / "mer2023-dataset-process").mkdir(parents=True)
    np.savez(root / "mer2023-dataset-process" / "label-6way.npz",
             test1_corpus={n: {"emo": e, "val": 0.0} for n, e in MER_GOLD.items()})
    (root / "cmumosi-process").mkdir()
    np.savez(root / "cmumosi-process" / "label.npz", test_corpus={n: {"val": v} for n, v in MOSI_GOLD.items()})
    (root / "ovmerdplus-process").mkdir()
    pd.DataFrame({"name": list(OV_GOLD), "openset": list(OV_GOLD.values())}).to_csv(
        root / "ovmerdplus-process" / "ovlabel.csv", index=False)
    return root


def write_checkpoint(folder: Path, epoch: int, opensets: dict[str, str], sentiments: dict[str, str] | None = None,
                     loss: float = 0.5) -> Path:
    """One checkpoint's files as the release writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"checkpoint_{epoch:06d}_loss_{loss:.3f}.npz"
    np.savez_compressed(base, name2reason={n: "In the text, ..." for n in opensets})
    names = sorted(opensets)
    np.savez_compressed(results.openset_path(base), filenames=names, fileitems=[opensets[n] for n in names])
    if sentiments is not None:
        np.savez_compressed(results.sentiment_path(base), filenames=names,
                            fileitems=np.array([sentiments[n] for n in names], dtype=object))
    return base


def mer_lists(n_right: int) -> dict[str, str]:
    """The first ``n_right`` MER samples get their gold emotion, the rest a wrong one."""
    wrong = {"happy": "sad", "sad": "happy", "angry": "happy", "worried": "happy"}
    return {n: f"[{g if i < n_right else wrong[g]}]" for i, (n, g) in enumerate(MER_GOLD.items())}


@pytest.fixture
def release(tmp_path) -> tuple[Path, Path]:
    gold = write_gold(tmp_path / "unibench")
    out = tmp_path / "output"
    # MER2023: epoch 25 is perfect but outside 30..60; 35 and 45 tie at 3/4 (35 wins, the earlier).
    for epoch, right in ((25, 4), (30, 2), (35, 3), (40, 1), (45, 3)):
        write_checkpoint(out / "results-mer2023" / MODEL, epoch, mer_lists(right))
    # CMU-MOSI: lists the rules read right, and the release LLM's own (here: different) sentiments.
    good = {"p1": "[happy, excited]", "p2": "[angry, frustrated]", "p3": "[relaxed, content]",
            "p4": "[nervous, worried]", "p5": "[calm]"}
    bad = dict(good, p1="[sad]", p3="[sad]")
    llm_words = {"p1": "negative", "p2": "negative", "p3": "positive", "p4": "negative", "p5": "neutral"}
    write_checkpoint(out / "results-cmumosi" / MODEL, 30, bad, llm_words)
    write_checkpoint(out / "results-cmumosi" / MODEL, 35, good, llm_words)
    # OV-MERD+: one checkpoint.
    write_checkpoint(out / "results-ovmerdplus" / MODEL, 40, {"o1": "['happy', 'relaxed']", "o2": "[sad]",
                                                              "o3": "[angry]"})
    return out, gold


def test_scores_every_checkpoint_and_picks_the_best(release, wheel_dir):
    out, gold = release
    summary = score_results(out, gold, ScoreConfig(wheel_dir=str(wheel_dir)))
    assert list(summary["datasets"]) == ["MER2023", "CMUMOSI", "OVMERDPlus"]
    mer = summary["datasets"]["MER2023"]["checkpoints"]
    assert sorted(mer) == [
        p.name for p in sorted((out / "results-mer2023" / MODEL).glob("checkpoint_*_loss_0.500.npz"))
    ]
    assert [mer[c]["score"] for c in sorted(mer)] == pytest.approx([1.0, 0.5, 0.75, 0.25, 0.75])
    best = summary["best"]
    # The release picks with np.argmax over the scores of sorted(glob('*.npz')) (evaluation.py:230-269):
    # the first maximum, i.e. the earliest epoch of a tie; epochs 30..60 as its test_epochs list.
    # By hand: MER2023 35 (0.75; 45 ties and comes later), CMU-MOSI 35 (4/4 right), OV-MERD+ 40 (the only one).
    assert best["MER2023"] == {"checkpoint": "checkpoint_000035_loss_0.500.npz", "epoch": 35, "score": 0.75}
    assert best["CMUMOSI"]["epoch"] == 35 and best["CMUMOSI"]["score"] == pytest.approx(1.0)
    assert best["OVMERDPlus"]["epoch"] == 40
    assert summary["mean"] == pytest.approx((0.75 + 1.0 + best["OVMERDPlus"]["score"]) / 3)
    assert summary["epochs"] == list(range(30, 61, 5)) and summary["missing_best"] == []
    # The labels are the release's own lists, recorded as such, and no LLM ran.
    mosi = summary["datasets"]["CMUMOSI"]["checkpoints"]["checkpoint_000035_loss_0.500.npz"]
    assert mosi["extraction"]["labels"] == {"released": 5} and mosi["extraction"]["sentiment"] == {"rules": 5}
    assert mosi["counts"]["llm_calls"] == 0
    # Every checkpoint competing: the perfect epoch 25 wins MER2023.
    everything = score_results(out, gold, ScoreConfig(wheel_dir=str(wheel_dir)), epochs=None)
    assert everything["best"]["MER2023"]["epoch"] == 25
    # The choice is select_best_checkpoint's, the function `affectflow benchmark` calls.
    assert results.select_best_checkpoint is metrics.select_best_checkpoint
    assert inference.benchmark.select_best_checkpoint is metrics.select_best_checkpoint


def test_sentiment_llm_takes_the_release_sentiment_file(release, wheel_dir):
    out, gold = release
    summary = score_results(out / "results-cmumosi", gold, ScoreConfig(wheel_dir=str(wheel_dir), sentiment="llm"))
    mosi = summary["datasets"]["CMUMOSI"]["checkpoints"]
    # The release's words are scored as they are (p1 negative, so 3 of 4 right), for both checkpoints.
    assert {c: r["scores"]["acc"] for c, r in mosi.items()} == {
        "checkpoint_000030_loss_0.500.npz": 0.75, "checkpoint_000035_loss_0.500.npz": 0.75}
    assert mosi["checkpoint_000035_loss_0.500.npz"]["extraction"]["sentiment"] == {"released": 5}


def test_folder_layouts(release, tmp_path):
    out, _ = release
    assert [f.dataset for f in find_results(out / "results-mer2023" / MODEL)] == ["MER2023"]
    assert [f.dataset for f in find_results(out / "results-mer2023")] == ["MER2023"]  # one model folder
    assert [f.dataset for f in find_results(out, dataset="mosi")] == ["CMUMOSI"]
    assert len(find_results(out)[0].checkpoints) == 5  # -openset / -sentiment files are not checkpoints
    write_checkpoint(out / "results-mer2023" / "other_model", 30, mer_lists(4))
    with pytest.raises(InputError, match="several models .*choose one with --model"):
        find_results(out)
    assert find_results(out, model="other_model")[0].folder.name == "other_model"
    plain = tmp_path / "plain"
    write_checkpoint(plain, 30, mer_lists(4))
    with pytest.raises(InputError, match="cannot tell the dataset"):
        find_results(plain)
    assert find_results(plain, dataset="MER2023")[0].dataset == "MER2023"
    with pytest.raises(FileNotFoundError, match="holds no checkpoint_"):
        find_results(tmp_path / "unibench")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_results(tmp_path / "nowhere")


def test_missing_openset_is_named(release, wheel_dir):
    out, gold = release
    ckpt = out / "results-mer2023" / MODEL / "checkpoint_000040_loss_0.500.npz"
    results.openset_path(ckpt).unlink()
    with pytest.raises(FileNotFoundError, match=r"checkpoint_000040_loss_0\.500-openset\.npz are missing"):
        score_results(out, gold, ScoreConfig(wheel_dir=str(wheel_dir)))


def test_malicious_pickle_is_refused(release, wheel_dir, tmp_path):
    class SystemCall:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    out, gold = release
    marker = tmp_path / "pwned"
    ckpt = out / "results-mer2023" / MODEL / "checkpoint_000030_loss_0.500.npz"
    np.savez(results.openset_path(ckpt), filenames=np.array(list(MER_GOLD)),
             fileitems=np.array([SystemCall()] * len(MER_GOLD), dtype=object))
    with pytest.raises(
        UnsafeNpzError, match="refused to unpickle global posix.system|refused to unpickle global os.system"
    ):
        score_results(out, gold, ScoreConfig(wheel_dir=str(wheel_dir)))
    assert not marker.exists()
