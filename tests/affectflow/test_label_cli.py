"""`affectflow label` end to end as a user runs it: every task flag on a plain folder of mp4s, a
registered model pulled by ``models:/`` inside the Ray job, and Ctrl-C (exit 130, the table resumes).

The questions' expected texts are the release's (my_affectgpt/datasets/datasets/base_dataset.py,
lines named below), with the range and candidates the flags give.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from affectflow.cli import main
from inference.table import parts_dir, read_table
from tests.conftest import REPO
from tests.fixtures.inference import STORE_NAMES

pytestmark = pytest.mark.slow  # end-to-end jobs: `make test-slow` (CI runs both tiers)

# base_dataset.py:313 (func_get_qa_sentiment).
SENTIMENT = ("Please select the most likely sentiment label that can best describe the person's emotional state: "
             "positive, negative, neutral.")
# base_dataset.py:299-302 (func_get_qa_valence): the range as the release prints its floats, and its
# U+FB02 ligature in "ﬂoating-point".
VALENCE = ("Please identify the overall positive or negative emotional polarity of the main characters. "
           "The output should be a \ufb02oating-point number ranging from -2.0 to 2.0. "
           "Here, -2.0 indicates extremely negative emotions, 0 indicates neutral emotions, and 2.0 indicates "
           "extremely positive emotions. Please provide your judgment as a \ufb02oating-point number.")
# base_dataset.py:277 (func_get_qa_onehot_w_candidates), candidates joined with "," as iemocap.py:87 does.
CLOSED = ("Please select the label that can best describe the person's emotional state from the provided "
          "candidate labels: happy,sad,angry.")
# base_dataset.py:266 (func_get_qa_ovlabel).
OV = "Please recognize all possible emotional states of the character."
MINE = "Which colour is the face?"
CLIPS = ["clip0", "clip1", "clip2"]


def test_every_task_flag_on_a_folder_of_mp4s(ray_session, synth_corpus, models_dir, trained_checkpoint, tmp_path,
                                             capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i, name in enumerate(CLIPS):  # plain mp4s: no wav, no face stack, no CSV (faces found with OpenCV)
        shutil.copy(synth_corpus / "video" / f"sample_{i:08d}.mp4", folder / f"{name}.mp4")
    out = tmp_path / "labels.parquet"
    common = ["--input", str(folder), "--model", str(trained_checkpoint), "--models", str(models_dir),
              "--out", str(out), "--batch-size", "3", "--max-new-tokens", "12", "--set", "ray.num_cpus=2"]
    assert main(["label", *common, "--task", "ov,sentiment,valence,closed", "--labels", "happy,sad,angry",
                 "--valence-range=-2,2"]) == 0
    assert "3 labeled" in capsys.readouterr().out
    # A second run into the same table asks the user's own question: the first run's rows stay.
    assert main(["label", *common, "--question", MINE]) == 0
    df = read_table(out).to_pandas()
    assert sorted(zip(df["name"], df["task"])) == sorted(
        (n, t) for n in CLIPS for t in ("ov", "sentiment", "valence", "closed", "question"))
    assert (df["status"] == "ok").all(), df[["name", "task", "error"]]
    questions = dict(zip(df["task"], df["question"]))
    assert questions == {"ov": OV, "sentiment": SENTIMENT, "valence": VALENCE, "closed": CLOSED, "question": MINE}
    # The trained model answers the OV question with the label template, parsed into the labels column.
    ov = df[df["task"] == "ov"]
    assert ov["text"].str.startswith("The character's emotional state is").all(), list(ov["text"])
    assert all(len(labels) >= 1 for labels in ov["labels"])


def test_a_registered_model_labels_through_ray_as_its_checkpoint(ray_session, mlflow_server, small_store,
                                                                trained_checkpoint, tmp_path, capsys):
    from core.config import load_config
    from registry.register import log_and_register

    cfg = load_config(None, [f"mlflow.tracking_uri={mlflow_server}", "mlflow.registered_model=affectgpt-label-cli",
                             "mlflow.alias=cli"])
    registered = log_and_register(trained_checkpoint, cfg)
    assert registered is not None
    common = ["--input", str(small_store), "--batch-size", "5", "--max-new-tokens", "12", "--set", "ray.num_cpus=2"]
    by_uri, by_path = tmp_path / "uri.parquet", tmp_path / "path.parquet"
    assert main(["label", *common, "--model", "models:/affectgpt-label-cli@cli", "--mlflow-uri", mlflow_server,
                 "--out", str(by_uri)]) == 0
    assert main(["label", *common, "--model", str(trained_checkpoint), "--out", str(by_path)]) == 0
    capsys.readouterr()
    uri, path = read_table(by_uri).to_pandas(), read_table(by_path).to_pandas()
    assert sorted(uri["name"]) == STORE_NAMES and (uri["status"] == "ok").all()
    assert (uri["model_version"] == registered.version).all()
    assert (uri["model_uri"] == f"models:/affectgpt-label-cli/{registered.version}").all()
    assert list(uri["text"]) == list(path["text"])  # the Ray workers loaded the registered weights


def test_ctrl_c_exits_130_and_the_rerun_resumes(ray_session, tiny_checkpoint, tmp_path, capsys):
    """The console script in its own process, joined to the session's Ray; SIGINT once a part is written.

    A store of six samples in six parts (one Ray Data block each) and 96 new tokens a row from an
    untrained model (it rarely stops early): about a second a block, so the job is still running when
    the first block's part lands."""
    import copy

    import ray

    from synth.features import SyntheticFeatures, write_synthetic_store

    store, n = tmp_path / "store.zarr", 6
    features = SyntheticFeatures(n, visual_dim=768, audio_dim=64)
    for i in range(n):
        one = copy.copy(features)
        one.items = features.items[i:i + 1]
        write_synthetic_store(one, str(store), str(tmp_path / "labels"))
    out = tmp_path / "labels.parquet"
    argv = ["label", "--input", str(store), "--model", str(tiny_checkpoint), "--out", str(out),
            "--batch-size", "1", "--max-new-tokens", "96", "--set", "ray.num_cpus=2"]
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    proc = subprocess.Popen([sys.executable, "-m", "affectflow.cli", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any(parts_dir(out).glob("*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, f"the job ended before it was interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err, err[-2000:]
    kept = sum(len(read_table(p)) for p in parts_dir(out).glob("*.parquet"))
    assert 1 <= kept < n
    assert main(argv) == 0
    assert f"{kept} already labeled" in capsys.readouterr().out
    df = read_table(out).to_pandas()
    assert sorted(df["name"]) == sorted(it["name"] for it in features.items) and (df["status"] == "ok").all()
    assert not parts_dir(out).exists()
