"""What a command prints: its progress line and summary; library output goes to the log it names (or,
with --verbose, to the console). Run through ``affectflow.cli.main`` on real models and a real Ray."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from affectflow.cli import main


def _named_log(err: str, command: str) -> Path:
    (path,) = re.findall(rf"affectflow {command}: log -> (\S+)", err)
    return Path(path)


def test_tiny_models_prints_its_summary_and_logs_the_library_bars(capfd, tmp_path):
    assert main(["tiny-models", str(tmp_path / "quiet")]) == 0
    out, err = capfd.readouterr()
    assert re.search(r"^clip: .*quiet/clip$", out, re.M) and re.search(r"^llm: ", out, re.M)
    assert "Writing model shards" not in out + err
    log = _named_log(err, "tiny-models")
    assert log.name.startswith("tiny-models-") and "Writing model shards" in log.read_text()

    # --verbose after the command (or before it): the library's bars on the console, no log file.
    assert main(["tiny-models", str(tmp_path / "loud"), "--verbose"]) == 0
    out, err = capfd.readouterr()
    assert "llm: " in out and "Writing model shards" in err and "log ->" not in err


@pytest.mark.slow
def test_preprocess_shows_one_bar_its_summary_and_where_ray_logs_are(ray_session, synth_corpus, models_dir,
                                                                    tmp_path, capfd):
    args = ["preprocess", "--corpus", str(synth_corpus), "--store", str(tmp_path / "s.zarr"), "--models",
            str(models_dir), "--limit", "8", "--set", "preprocess.batch_size=4",
            "--set", "preprocess.write_batch_size=4"]
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert "ok: 8" in out and "videos/s" in out  # the summary
    assert "preprocess: 100%" in err and "8/8" in err  # one bar, counted per written part
    assert re.search(r"Ray workers' output -> \S+/logs$", err, re.M)
    # Ray Data's plan and progress reports are in the log, not on the console.
    assert "Execution plan" not in out + err and "Running Dataset" not in out + err
    assert "Execution plan" in _named_log(err, "preprocess").read_text()


def test_a_user_error_still_comes_first_on_stderr(capfd, tmp_path):
    assert main(["preprocess", "--corpus", str(tmp_path / "none"), "--store", str(tmp_path / "s.zarr"),
                 "--models", str(tmp_path)]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.startswith("affectflow preprocess: error: ")
