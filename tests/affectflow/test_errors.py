"""One error hierarchy: what the user can fix prints ``affectflow CMD: error: …`` and exits 2; a bug keeps its
traceback.

Every case goes through ``affectflow.cli.main`` on real files; none starts Ray.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from affectflow.cli import main


class Payload:
    """A custom class in a pickle: the safe npz reader must refuse it."""


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def user_error(capsys, command: str, *argv: str) -> str:
    """Run the CLI, check it failed as a user error (exit 2, one ``error:`` line) and return that line."""
    code, err = run(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"affectflow {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def ov_files(tmp_path):
    """OVMERDPlus gold labels and matching predictions (CSV), scorable with the packaged wheels."""
    gt = tmp_path / "ovlabel.csv"
    pd.DataFrame({"name": ["s1", "s2"], "openset": ["[happy]", "[sad, angry]"]}).to_csv(gt, index=False)
    pred = tmp_path / "pred.csv"
    pd.DataFrame({"name": ["s1", "s2"], "openset": ["[joyful]", "[sad]"]}).to_csv(pred, index=False)
    return gt, pred


@pytest.fixture
def mosi_gt(tmp_path):
    gt = tmp_path / "mosi.csv"
    pd.DataFrame({"name": ["a", "b"], "val": ["1.5", "-2"]}).to_csv(gt, index=False)
    return gt


def test_config_error_names_the_key(capsys):
    err = user_error(capsys, "config", "config", "show", "--set", "train.nope=1")
    assert "unknown config key 'train.nope'" in err
    err = user_error(capsys, "config", "config", "show", "--set", "train.lr=-1")
    assert "train: lr must be > 0, got -1.0" in err
    # Checked when the config loads, not in a labeling actor.
    err = user_error(
        capsys, "config", "config", "show", "--set", "label.do_sample=true", "--set", "label.temperature=0"
    )
    assert "label: temperature must be > 0, got 0.0" in err


def test_input_error_names_the_predictions_file(capsys, tmp_path, mosi_gt):
    err = user_error(capsys, "evaluate", "evaluate", "--dataset", "CMUMOSI", "--gt", str(mosi_gt),
                     "--predictions", str(tmp_path / "gone.csv"))
    assert f"predictions file {tmp_path / 'gone.csv'} does not exist" in err
    garbled = tmp_path / "garbled.parquet"
    garbled.write_bytes(b"not parquet at all")
    err = user_error(capsys, "evaluate", "evaluate", "--dataset", "CMUMOSI", "--gt", str(mosi_gt),
                     "--predictions", str(garbled))
    assert f"{garbled}: cannot read it as a parquet table" in err


def test_unsafe_npz_is_refused_as_a_user_error(capsys, tmp_path, mosi_gt):
    pred = tmp_path / "result.npz"
    np.savez(pred, name2reason={"a": Payload()})
    err = user_error(capsys, "evaluate", "evaluate", "--dataset", "CMUMOSI", "--gt", str(mosi_gt),
                     "--predictions", str(pred))
    assert f"{pred}[name2reason]: refused to unpickle global {__name__}.Payload" in err
    # A label file that is not an npz at all, and one that lacks the dataset's key.
    bad = tmp_path / "label.npz"
    bad.write_text("hello")
    err = user_error(capsys, "evaluate", "evaluate", "--dataset", "CMUMOSI", "--gt", str(bad),
                     "--predictions", str(pred))
    assert f"{bad} is not an .npz (zip) file" in err
    np.savez(bad, train_corpus={})
    err = user_error(capsys, "evaluate", "evaluate", "--dataset", "CMUMOSI", "--gt", str(bad),
                     "--predictions", str(pred))
    assert f"{bad} has no array 'test_corpus'" in err


def test_store_error_on_a_folder_that_is_no_store(capsys, tmp_path):
    folder = tmp_path / "not-a-store"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    err = user_error(capsys, "store", "store", "inspect", str(folder))
    assert f"{folder} is not a feature store" in err


def test_model_ref_error_on_a_folder_without_checkpoint(capsys, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 64)  # the model is resolved before the video is decoded
    empty = tmp_path / "model"
    empty.mkdir()
    err = user_error(capsys, "infer", "infer", str(video), "--model", str(empty))
    assert f"{empty} holds no AffectFlow checkpoint" in err


def test_wheel_errors_name_the_file(capsys, tmp_path, ov_files, wheel_dir):
    gt, pred = ov_files
    args = ("evaluate", "--dataset", "OVMERDPlus", "--gt", str(gt), "--predictions", str(pred))
    empty = tmp_path / "wheel"
    empty.mkdir()
    err = user_error(capsys, "evaluate", *args, "--wheel", str(empty))
    assert f"emotion wheel: {empty / 'format.csv'} is missing" in err
    broken = tmp_path / "broken-wheel"
    shutil.copytree(wheel_dir, broken)
    (broken / "wheel3.xlsx").write_bytes(b"not a spreadsheet")
    err = user_error(capsys, "evaluate", *args, "--wheel", str(broken))
    assert f"emotion wheel: cannot read {broken / 'wheel3.xlsx'}" in err
    # The same files score once the wheel is whole.
    code, err = run(capsys, *args, "--wheel", str(wheel_dir))
    assert code == 0, err


def test_benchmark_error_on_a_folder_without_datasets(capsys, tmp_path):
    root = tmp_path / "unibench"
    root.mkdir()
    (root / "readme.txt").write_text("no datasets here")
    err = user_error(capsys, "benchmark", "benchmark", "--model", str(tmp_path / "m"), "--unibench-root", str(root),
                     "--out", str(tmp_path / "out"))
    assert f"{root} holds none of the MER-UniBench folders" in err
    err = user_error(capsys, "benchmark", "benchmark", "--model", str(tmp_path / "m"), "--unibench-root", str(root),
                     "--datasets", "NOPE", "--out", str(tmp_path / "out"))
    assert "unknown MER-UniBench dataset 'NOPE'" in err


def test_a_bug_keeps_its_traceback(capsys, monkeypatch, tmp_path, ov_files):
    import affectflow.commands.store as store_cmd
    import inference.benchmark
    import scoring.evaluate

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(store_cmd, "store_inspect", broken)
    with pytest.raises(ZeroDivisionError):
        main(["store", "inspect", str(tmp_path)])

    # KeyError and ValueError were once re-worded as user errors by evaluate and benchmark.
    def key_bug(*args, **kwargs):
        raise KeyError("internal")

    def value_bug(*args, **kwargs):
        raise ValueError("internal")

    gt, pred = ov_files
    monkeypatch.setattr(scoring.evaluate, "evaluate", key_bug)
    with pytest.raises(KeyError, match="internal"):
        main(["evaluate", "--dataset", "OVMERDPlus", "--gt", str(gt), "--predictions", str(pred)])
    monkeypatch.setattr(inference.benchmark, "benchmark", value_bug)
    with pytest.raises(ValueError, match="internal"):
        main(["benchmark", "--model", "m", "--unibench-root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "error:" not in capsys.readouterr().err
