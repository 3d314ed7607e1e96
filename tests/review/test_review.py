"""`affectflow review`: a labeled corpus in a real FiftyOne dataset (its own MongoDB, in a temp folder),
reviewers' tags back as verdicts, one training step on the corrected labels, and the App's server.

The five samples of the session store are labeled through the CLI by the untrained tiny checkpoint, so
their labels are whatever it says: every expectation is read from the files themselves (the label
parquet with pyarrow, the corpus CSVs with pandas, the store's Zarr arrays with zarr, the videos with
decord), never from our readers.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.fixtures.inference import STORE_NAMES as NAMES

pytestmark = pytest.mark.slow  # end-to-end jobs: `make test-slow` (CI runs both tiers)

DATASET = "affectflow-review-test"


@pytest.fixture(scope="module")
def fiftyone_db(tmp_path_factory):
    """FiftyOne's database in a temp folder (never ~/.fiftyone), set before fiftyone is imported."""
    root = tmp_path_factory.mktemp("fiftyone")
    env = {"FIFTYONE_DATABASE_DIR": str(root / "db"), "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_SHOW_PROGRESS_BARS": "false"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fiftyone as fo

    fo.config.database_dir = env["FIFTYONE_DATABASE_DIR"]
    yield env
    if fo.dataset_exists(DATASET):
        fo.delete_dataset(DATASET)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def exported(fiftyone_db, ray_session, small_store, synth_corpus, tiny_checkpoint, tmp_path_factory):
    """The five store samples labeled (ov + description) with `affectflow label`, then exported."""
    from affectflow.cli import main

    root = tmp_path_factory.mktemp("review")
    table = root / "labels.parquet"
    assert main(["label", "--input", str(small_store), "--model", str(tiny_checkpoint), "--out", str(table),
                 "--task", "both", "--batch-size", "5", "--max-new-tokens", "8", "--set", "ray.num_cpus=2"]) == 0
    export = ["review", "export", "--labels", str(table), "--corpus", str(synth_corpus), "--store", str(small_store),
              "--dataset", DATASET, "--method", "pca"]
    assert main(export) == 0
    return {"root": root, "table": table, "export": export}


def _zarr_means(store: Path, modality: str) -> dict[str, np.ndarray]:
    """name -> the stored [T, D] features of ``modality`` averaged over T, read with zarr (the layout in
    features/store.py's docstring: features/{modality}/{spec}/parts/{part}/ name + values, visible once its
    ``affectflow_part`` attributes say committed)."""
    import zarr

    out = {}
    group = zarr.open_group(str(store / "features" / modality), mode="r")
    for _, spec in group.groups():
        for _, part in spec["parts"].groups():
            if part.attrs.get("affectflow_part", {}).get("committed"):
                for name, values in zip(part["name"][:], part["values"][:]):
                    out[str(name)] = np.asarray(values, dtype=np.float32).mean(axis=0)
    return out


def _words(text: str) -> list[str]:
    """A MER2025 openset cell ("[happy, relaxed]" or "['happy', 'relaxed']") as lower-case words."""
    return [w.strip(" '\"").lower() for w in text.strip().strip("[]").split(",") if w.strip(" '\"")]


def test_export_review_pull_and_train(exported, small_store, synth_corpus, tiny_models, tmp_path, capsys):
    import decord
    import fiftyone as fo
    import pyarrow.parquet as pq
    from fiftyone import ViewField as F

    from affectflow.cli import main

    ds = fo.load_dataset(DATASET)
    assert ds.persistent and ds.media_type == "video"
    assert sorted(ds.values("name")) == NAMES and len(ds) == len(NAMES)

    # Samples: the corpus video, its metadata as decord reads it, the subtitle of the corpus CSV.
    subs = pd.read_csv(synth_corpus / "subtitle_chieng.csv", dtype=str, keep_default_na=False).set_index("name")
    for s in ds:
        video = synth_corpus / "video" / f"{s.name}.mp4"
        assert s.filepath == str(video.resolve())
        vr = decord.VideoReader(str(video))
        h, w = vr[0].shape[:2]
        assert (s.metadata.frame_width, s.metadata.frame_height) == (w, h)
        assert s.metadata.frame_rate == pytest.approx(vr.get_avg_fps(), rel=1e-3)
        assert s.metadata.total_frame_count == len(vr)
        assert s.subtitle == subs.loc[s.name, "english"]

    # Labels: per task, as the parquet holds them.
    rows = pq.read_table(exported["table"]).to_pylist()
    assert {(r["name"], r["task"]) for r in rows} == {(n, t) for n in NAMES for t in ("ov", "description")}
    for r in rows:
        s = ds.one(F("name") == r["name"])
        assert s[f"{r['task']}_status"] == r["status"] and s[f"{r['task']}_error"] == r["error"]
        if r["task"] == "ov":
            got = None if s.ov is None else [c.label for c in s.ov.classifications]  # declared even when empty
            assert got == r["labels"] and s.ov_text == r["text"]
            assert (s.emotion.label if s.emotion else None) == (r["labels"][0] if r["labels"] else None)
        else:
            assert s.description == r["text"]
        assert s.model_uri == r["model_uri"]
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(exported["table"]).metadata or {}).items()
            if k not in (b"pandas", b"ARROW:schema")}
    info = json.loads(ds.info["label_table_metadata"])
    assert set(info) == set(meta) and all(json.dumps(info[k]) == meta[k] or info[k] == meta[k] for k in meta)

    # The labels preprocessing stored: the corpus track-2 CSV.
    track2 = pd.read_csv(synth_corpus / "track2_train_mercaptionplus.csv", dtype=str).set_index("name")
    for s in ds:
        assert [c.label for c in s.stored_ov.classifications] == _words(track2.loc[s.name, "openset"])

    # Embeddings: the stored features averaged over time; the 2-D map: their PCA (by hand, with numpy).
    for modality, field, key in (("face", "clip_embedding", "clip"), ("audio", "hubert_embedding", "hubert")):
        means = _zarr_means(Path(small_store), modality)
        for s in ds:
            np.testing.assert_allclose(s[field], means[s.name], rtol=1e-5, atol=1e-6)
        results = ds.load_brain_results(key)
        ids = list(results.sample_ids)
        by_id = dict(zip(ds.values("id"), ds.values("name")))
        x = np.stack([means[by_id[i]] for i in ids]).astype(np.float64)
        x -= x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        want = x @ vt[:2].T  # PCA up to each axis' sign: compare pairwise distances
        got = np.asarray(results.points, dtype=np.float64)
        assert got.shape == (len(NAMES), 2)
        dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
        np.testing.assert_allclose(dist(got), dist(want), rtol=1e-3, atol=1e-4)

    # A reviewer in the App: one sample tagged ok, another tagged wrong with a corrected label set. (The
    # untrained model may give no label list at all: then "ok" stands behind none, and the stored labels stay.)
    ov = {r["name"]: r["labels"] for r in rows if r["task"] == "ov"}
    ok_name = next((n for n in NAMES if ov[n] is not None), NAMES[0])
    wrong_name = next(n for n in NAMES if n != ok_name)
    ok_labels = ov[ok_name]
    ok_cell = "" if ok_labels is None else "[" + ", ".join(ok_labels) + "]"
    start = datetime.now(timezone.utc) - timedelta(seconds=1)
    ds.select_by("name", [ok_name]).tag_samples("ok")
    ds.select_by("name", [wrong_name]).tag_samples("wrong")
    ds.select_by("name", [wrong_name]).set_values("corrected", [["angry", "sad"]])

    # A rerun updates in place: no duplicate, review kept.
    assert main(exported["export"]) == 0
    assert "0 samples added, 5 updated" in capsys.readouterr().out
    ds.reload()
    assert len(ds) == len(NAMES) and ds.count_sample_tags() == {"ok": 1, "wrong": 1}
    assert ds.one(F("name") == wrong_name).corrected == ["angry", "sad"]

    verdicts = tmp_path / "verdicts.csv"
    assert main(["review", "pull", DATASET, "--out", str(verdicts)]) == 0
    with open(verdicts, newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    assert got[0] == ["name", "verdict", "labels", "tagged_at"]
    assert [r[:3] for r in got[1:]] == sorted([[ok_name, "ok", ok_cell], [wrong_name, "wrong", "[angry, sad]"]])
    for r in got[1:]:
        when = datetime.fromisoformat(r[3].replace("Z", "+00:00"))
        assert start <= when <= datetime.now(timezone.utc) + timedelta(seconds=1)

    # Training reads the reviewers' labels for those two names and the stored ones for the rest...
    from training.data import load_features

    data = load_features(str(small_store), None, "face", verdicts=str(verdicts))
    labels = dict(zip(data.names, data.openset))
    assert labels[wrong_name] == ["angry", "sad"]
    for n in set(NAMES) - {wrong_name}:
        want = [w.lower() for w in ok_labels] if n == ok_name and ok_labels is not None else None
        assert labels[n] == (want if want is not None else _words(track2.loc[n, "openset"]))
    # ... and trains a step on them.
    sets = ["train.global_batch_size=1", "train.micro_batch_size=1", "train.steps_per_epoch=1", "train.max_tokens=256",
            "train.progress=false", "train.workers=1"]
    args = ["train", "--store", str(small_store), "--labels", str(verdicts), "--out", str(tmp_path / "run"),
            "--models", str(Path(tiny_models["llm"]).parent), "--no-track"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert f"{1 + (ok_labels is not None)} samples take the reviewers' labels" in out
    assert Path(out.split("final checkpoint: ")[1].split()[0]).name == "step_00000001"


def test_verdict_rules():
    from review.verdicts import verdict_of

    assert verdict_of([], ["happy"], [[]], None) is None  # not reviewed
    assert verdict_of(["ok"], ["happy", "calm"], [[], []], None) == ("ok", ["happy", "calm"])
    assert verdict_of(["ok"], [], [], None) == ("ok", [])  # an empty list is neutral
    assert verdict_of(["ok"], None, None, None) == ("ok", None)  # no OV labels to stand behind
    assert verdict_of(["wrong"], ["happy"], [[]], None) == ("wrong", None)
    assert verdict_of(["ok", "wrong"], ["happy"], [[]], None) == ("wrong", None)
    assert verdict_of([], ["happy", "calm"], [["wrong"], []], None) == ("wrong", ["calm"])
    assert verdict_of([], ["happy"], [["wrong"]], None) == ("wrong", None)
    assert verdict_of(["ok"], ["happy"], [[]], ["angry"]) == ("wrong", ["angry"])


def test_the_app_serves_its_page_on_loopback(exported, fiftyone_db, tmp_path):
    import socket

    import fiftyone as fo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(Path(sys.executable).with_name("affectflow")), "review", "open", DATASET, "--port", str(port),
           "--remote"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # HOME: FiftyOne's config folder is ~/.fiftyone (the App's server writes an id there)
                            env={**os.environ, **fiftyone_db, "HOME": str(tmp_path)}, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + proc.stdout.read() if proc.poll() is not None else line
        deadline, page = time.monotonic() + 60, None
        while page is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    page = (r.status, r.read().decode("utf-8", "replace"))
            except OSError:
                time.sleep(0.5)
        assert page is not None and page[0] == 200 and "<title>FiftyOne</title>" in page[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/fiftyone", timeout=5) as r:
            assert json.loads(r.read())["version"] == fo.__version__
        # SIGTERM (what a process manager sends; Ctrl-C takes the same path): the session closes, the
        # App's server stops, the command exits 0 and the port is free again.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail(f"port {port} still answers after the command ended")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_an_s3_corpus_is_fetched_once_into_the_cache(exported, fiftyone_db, s3_server, synth_corpus, tmp_path,
                                                      capsys):
    """The labeled videos of a corpus on (moto) S3 land in --cache byte for byte and the samples point there; a
    video missing from the bucket is left out and named; a rerun fetches nothing again."""
    import fiftyone as fo
    import s3fs

    from affectflow.cli import main

    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing")
    root = "affectflow-review/corpus"
    if not fs.exists("affectflow-review"):
        fs.mkdir("affectflow-review")
    for name in ("subtitle_chieng.csv", "track2_train_mercaptionplus.csv", "track3_train_mercaptionplus.csv"):
        fs.put(str(synth_corpus / name), f"{root}/{name}")
    for n in NAMES[:-1]:  # the last one's video is missing
        fs.put(str(synth_corpus / "video" / f"{n}.mp4"), f"{root}/video/{n}.mp4")
    cache = tmp_path / "cache"
    args = ["review", "export", "--labels", str(exported["table"]), "--corpus", f"s3://{root}",
            "--dataset", "affectflow-review-s3", "--cache", str(cache), "--method", "pca"]
    try:
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "4 samples added" in out and f"left out {NAMES[-1]}" in out
        ds = fo.load_dataset("affectflow-review-s3")
        assert sorted(ds.values("name")) == NAMES[:-1]
        for s in ds:
            assert s.filepath == str((cache / f"{s.name}.mp4").resolve())
            assert Path(s.filepath).read_bytes() == (synth_corpus / "video" / f"{s.name}.mp4").read_bytes()
        stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
        assert main(args) == 0 and "0 samples added, 4 updated" in capsys.readouterr().out
        assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    finally:
        if fo.dataset_exists("affectflow-review-s3"):
            fo.delete_dataset("affectflow-review-s3")
