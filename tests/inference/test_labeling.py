"""Batch labeling on Ray: raw corpus and store inputs, output columns, resume, byte-identical reruns."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from core.config import load_config
from inference.labeling import LabelRequest, label
from inference.table import COLUMNS, read_provenance, read_table
from tests.fixtures.inference import STORE_NAMES as NAMES
from tests.fixtures.pipeline import copy_corpus


def label_config(*overrides: str):
    return load_config(None, ["ray.num_cpus=2", "label.max_new_tokens=8", "preprocess.batch_size=4", *overrides])


@pytest.fixture(scope="module")
def small_corpus(synth_corpus, tmp_path_factory):
    """Five samples of the session corpus, plus one whose video is missing."""
    root = copy_corpus(synth_corpus, tmp_path_factory.mktemp("label_corpus"), NAMES)
    (root / "video" / f"{NAMES[-1]}.mp4").unlink()
    return root


def test_raw_corpus_end_to_end_and_resume(ray_session, small_corpus, models_dir, tiny_checkpoint, tmp_path):
    out = tmp_path / "labels.parquet"
    cfg = label_config("label.task=both", "label.batch_size=2", "seed=0")
    summary = label(LabelRequest(small_corpus, str(tiny_checkpoint), out, cfg, models=models_dir))
    assert (summary.kind, summary.total, summary.skipped) == ("mer2025", len(NAMES), 0)
    assert (summary.ok, summary.failed, summary.rows) == (8, 2, 10)
    df = read_table(out).to_pandas()
    assert tuple(df.columns) == COLUMNS
    assert list(zip(df["name"], df["task"])) == sorted((n, t) for n in NAMES for t in ("description", "ov"))
    ok = df[df["status"] == "ok"]
    assert len(ok) == 8 and ok["text"].str.len().min() > 0 and (ok["error"] == "").all()
    assert (df["model_uri"] == str(tiny_checkpoint.resolve())).all() and (df["model_version"] == "").all()
    bad = df[df["name"] == NAMES[-1]]
    assert (bad["status"] == "failed").all() and bad["error"].str.contains(f"{NAMES[-1]}.mp4").all()
    assert not (tmp_path / "labels.parquet.parts").exists()

    before = out.read_bytes()
    again = label(LabelRequest(small_corpus, str(tiny_checkpoint), out, cfg, models=models_dir))
    assert (again.skipped, again.ok, again.failed) == (len(NAMES), 0, 0)
    assert out.read_bytes() == before


@pytest.mark.slow
def test_store_input_is_deterministic_and_resumes(ray_session, small_store, tiny_checkpoint, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    cfg = label_config("label.batch_size=2", "seed=3")
    sa = label(LabelRequest(small_store, str(tiny_checkpoint), a, cfg))
    sb = label(LabelRequest(small_store, str(tiny_checkpoint), b, cfg))
    assert sa.kind == "store" and sa.ok == sb.ok == len(NAMES) and sa.failed == 0
    assert a.read_bytes() == b.read_bytes()
    meta = pq.ParquetFile(a).metadata
    assert meta.metadata is None or b"pandas" not in meta.metadata  # no run-dependent metadata

    # Resume after losing two rows (an interrupted run): only those are labeled, in other batches
    # than the first time, and the table comes out byte-identical.
    full = read_table(a)
    pq.write_table(full.slice(0, 3), a)
    sc = label(LabelRequest(small_store, str(tiny_checkpoint), a, label_config("label.batch_size=4", "seed=3")))
    assert (sc.skipped, sc.ok) == (3, 2)
    assert a.read_bytes() == b.read_bytes()


def test_cli_label_to_csv(ray_session, small_store, tiny_checkpoint, tmp_path, capsys):
    from affectflow.cli import main

    out = tmp_path / "labels.csv"
    args = ["label", "--input", str(small_store), "--model", str(tiny_checkpoint), "--out", str(out),
            "--batch-size", "5", "--max-new-tokens", "6", "--set", "ray.num_cpus=2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"{len(NAMES)} labeled" in text and "samples/s" in text
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 1 + len(NAMES)
    assert main(args) == 0 and f"{len(NAMES)} already labeled" in capsys.readouterr().out
    assert main(["label", "--input", str(small_store), "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_tasks_questions_and_the_prompt_budget(ray_session, small_store, tiny_checkpoint, tmp_path):
    """Named tasks ask the released questions, --question asks yours; both are recorded per row. A
    subtitle is shortened to fit the prompt (flagged on its row, counted); a prompt that cannot fit
    even without it is a failed row with a reason."""
    from modeling.prompt import QUESTION_TASK, question_for

    out = tmp_path / "asks.parquet"
    asks = ["label.valence_range=[-3,3]", "label.batch_size=5", "seed=0"]
    s = label(LabelRequest(small_store, str(tiny_checkpoint), out, label_config(*asks, "label.task=sentiment,valence")))
    df = read_table(out).to_pandas()
    assert (s.ok, s.failed) == (2 * len(NAMES), 0) and set(df["task"]) == {"sentiment", "valence"}
    want = {"sentiment": question_for("sentiment"), "valence": question_for("valence", valence_range=(-3, 3))}
    assert all(q == want[t] for t, q in zip(df["task"], df["question"])) and (df["subtitle_cut"] == 0).all()

    mine = "How loud is the person speaking?"
    s = label(LabelRequest(small_store, str(tiny_checkpoint), out, label_config(*asks, f"label.question={mine}")))
    df = read_table(out).to_pandas()
    asked = df[df["task"] == QUESTION_TASK]
    assert s.ok == len(NAMES) and len(asked) == len(NAMES) and (asked["question"] == mine).all()
    assert f"tasks: question ({mine!r})" in s.format()
    # Another question is asked again (and replaces the rows), the same one is skipped.
    why = label_config(*asks, f"label.question={mine} Why?")
    other = label(LabelRequest(small_store, str(tiny_checkpoint), out, why))
    same = label(LabelRequest(small_store, str(tiny_checkpoint), out, why))
    assert (other.skipped, other.ok, same.skipped, same.ok) == (0, len(NAMES), len(NAMES), 0)
    assert (read_table(out).to_pandas().query("task == 'question'")["question"] == mine + " Why?").all()

    tight = tmp_path / "tight.parquet"
    long_q = "Please describe, in great detail, every emotion you can see or hear in this video. " * 6
    s = label(LabelRequest(small_store, str(tiny_checkpoint), tight,
                           label_config("label.batch_size=5", "seed=0", "label.max_prompt_tokens=150",
                                        f"label.question={long_q}")))
    t = read_table(tight).to_pandas()
    assert s.failed == len(NAMES) and set(s.failures) == {"prompt/too-long"}
    assert t["error"].str.startswith("prompt/too-long: the prompt is over 150 tokens").all()

    from modeling.prompt import build_prompt
    from registry.resolve import load_model

    model, _ = load_model(str(tiny_checkpoint), device="cpu")
    bare = len(model.tokenizer(build_prompt("", question_for("ov")), add_special_tokens=False)["input_ids"])
    cut = tmp_path / "cut.parquet"
    s = label(LabelRequest(small_store, str(tiny_checkpoint), cut,
                           label_config("label.batch_size=5", "seed=0", f"label.max_prompt_tokens={bare + 2}")))
    c = read_table(cut).to_pandas()
    assert s.failed == 0 and s.shortened == (c["subtitle_cut"] > 0).sum() > 0
    assert f"subtitles shortened to fit the {bare + 2}-token prompt: {s.shortened} rows" in s.format()


@pytest.mark.slow
def test_the_static_backend_labels_byte_identical_to_hf(ray_session, small_store, tiny_checkpoint, tmp_path):
    """Greedy labeling through the static cache (3 slots, refilled within each actor batch of 4 samples x 2
    tasks) writes the hf backend's rows byte for byte (the tables' provenance differs in the backend it records);
    a row over an explicit cache length is a failed row."""
    hf, static = tmp_path / "hf.parquet", tmp_path / "static.parquet"
    both = ["label.task=both", "label.batch_size=4", "seed=0"]
    a = label(LabelRequest(small_store, str(tiny_checkpoint), hf, label_config(*both, "label.backend=hf")))
    b = label(LabelRequest(small_store, str(tiny_checkpoint), static,
                           label_config(*both, "label.backend=static", "label.cache_rows=3")))
    assert a.ok == b.ok == 2 * len(NAMES) and read_table(hf).equals(read_table(static))
    ph, ps = read_provenance(hf), read_provenance(static)
    assert (ph["decoding"].pop("backend"), ps["decoding"].pop("backend")) == ("hf", "static") and ph == ps

    tight = tmp_path / "tight.parquet"
    s = label(LabelRequest(small_store, str(tiny_checkpoint), tight,
                           label_config("label.batch_size=5", "seed=0", "label.backend=static",
                                        "label.cache_tokens=20")))
    t = read_table(tight).to_pandas()
    assert s.failed == len(NAMES) and set(s.failures) == {"cache/too-long"}
    assert t["error"].str.startswith("cache/too-long: the prompt and the 8-token answer budget exceed").all()
