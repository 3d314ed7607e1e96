"""`affectflow benchmark` end to end on synthetic MER-UniBench folders, and reference-file interop.

Most tests use a stand-in labeler: it recovers each sample's emotion from its OpenFace stack
(the synthetic faces are tinted per emotion), so a perfect score also proves that the readers
hand the right media to the labeler. One test runs `affectflow benchmark` with real labeling by a tiny
model trained to answer with the label template.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from affectflow import cli as affectflow_cli
from core.config import load_config
from core.errors import BenchmarkError
from inference.benchmark import BenchmarkRequest, benchmark
from scoring.report import PAPER
from scoring.unibench import DATASETS, load_gold
from synth.corpus import EMOTIONS, MAIN_WORD, crop_faces, render_video
from synth.unibench import write_unibench

N = 3
TEMPLATE = "The character's emotional state is {}."


@pytest.fixture(scope="module")
def unibench(tmp_path_factory):
    return write_unibench(tmp_path_factory.mktemp("unibench"), N, seed=0)


_REFERENCE_FACES: dict[str, np.ndarray] = {}


def _reference_colour(emotion: str) -> np.ndarray:
    if emotion not in _REFERENCE_FACES:
        frames, boxes = render_video(emotion, 1, np.random.default_rng(0))
        _REFERENCE_FACES[emotion] = crop_faces(frames, boxes).reshape(-1, 3).mean(0)
    return _REFERENCE_FACES[emotion]


def bench_request(models, root, out, wheel_dir, *overrides: str, **fields) -> BenchmarkRequest:
    """A benchmark of ``models`` on ``root`` into ``out``, scored with ``wheel_dir`` and the config ``overrides``."""
    cfg = load_config(None, [f"score.wheel_dir={wheel_dir}", *overrides])
    return BenchmarkRequest(models, root, out, cfg, **fields)


def tint_labeler(job, progress=None):
    """Labels from the face stack's mean colour; model "weak" always answers neutral."""
    model, out, task = job.model, job.out, job.cfg.label.task
    records = []
    for r in job.rows:
        mean = np.load(r.face).reshape(-1, 3).mean(0)
        emotion = min(EMOTIONS, key=lambda e: float(((_reference_colour(e) - mean) ** 2).sum()))
        if model == "weak":
            emotion = "neutral"
        records.append({"name": r.name, "task": task, "text": TEMPLATE.format(MAIN_WORD[emotion]),
                        "labels": [MAIN_WORD[emotion]], "model_uri": model, "model_version": "",
                        "status": "ok", "error": ""})
    table = pd.DataFrame(records)
    table.to_parquet(out, index=False)
    return table


def run_cli(*argv) -> int:
    return affectflow_cli.main(list(argv))


def test_benchmark_report_best_of_and_determinism(unibench, wheel_dir, tmp_path):
    runs = []
    for out in (tmp_path / "a", tmp_path / "b"):
        scores = benchmark(bench_request(["weak", "ckpt_epoch_35"], unibench.root, out, wheel_dir,
                                         "label.batch_size=2", "seed=7"), labeler=tint_labeler)
        runs.append((out, scores))
    (a, scores), (b, _) = runs
    assert (a / "scores.json").read_bytes() == (b / "scores.json").read_bytes()
    tables = sorted(p.relative_to(a) for p in (a / "labels").rglob("*.parquet"))
    assert [t.name for t in tables] == ["00-weak.parquet", "01-ckpt_epoch_35.parquet"]
    names = pd.read_parquet(a / tables[0])["name"]
    # Every dataset is labeled, the sentiment set too (its lists are mapped by the valence rules).
    assert len(names) == 5 * N and names.str.startswith("MELD::").sum() == N
    assert names.str.startswith("CMUMOSI::").sum() == N
    for rel in tables:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()

    on_disk = json.loads((a / "scores.json").read_text())
    assert on_disk == json.loads(json.dumps(scores))
    assert scores["datasets"] == ["MER2023", "IEMOCAPFour", "MELD", "CMUMOSI", "OVMERDPlus"]
    assert scores["skipped"] == {} and scores["sentiment"] == "rules" and scores["synthetic"] is True
    assert "paper" not in scores and "paper" not in scores["mean"]
    good = scores["models"]["ckpt_epoch_35"]["datasets"]
    weak = scores["models"]["weak"]["datasets"]
    for d in ("MER2023", "IEMOCAPFour", "MELD", "CMUMOSI", "OVMERDPlus"):
        assert good[d]["score"] == pytest.approx(1.0), d  # the emotion is in the media
        assert weak[d]["score"] < good[d]["score"]
        assert scores["best"][d]["checkpoint"] == "ckpt_epoch_35"
        assert good[d]["labeling"] == {"n": N, "failed": 0, "unparsed": 0}
    # No LLM anywhere: the sentiment set's lists went through the rules, row by row.
    assert good["CMUMOSI"]["counts"]["llm_calls"] == 0
    assert good["CMUMOSI"]["extraction"]["sentiment"] == {"rules": N}
    assert good["CMUMOSI"]["extraction"]["labels"] == {"template": N}
    assert "rows" not in good["CMUMOSI"]  # the rows are in their own file
    rows = pd.read_csv(a / "rows" / "01-ckpt_epoch_35.csv", keep_default_na=False)
    assert len(rows) == 5 * N and set(rows["labels_from"]) == {"template"}
    mosi = rows[rows["dataset"] == "CMUMOSI"]
    assert set(mosi["sentiment_from"]) == {"rules"}
    expected = {"happy": "positive", "sad": "negative", "neutral": "neutral"}  # as the media were rendered
    assert {r.name: r.sentiment for r in mosi.itertuples()} == {
        n: expected[e] for n, e in unibench.emotions["CMUMOSI"].items()}
    assert (rows[rows["dataset"] == "MELD"]["sentiment"] == "").all()
    conf = good["IEMOCAPFour"]["confusion"]
    assert conf["gold"] and conf["pred"][-1] == "other"
    assert sum(map(sum, conf["matrix"])) == N
    assert all(conf["matrix"][i][conf["pred"].index(g)] == sum(conf["matrix"][i])
               for i, g in enumerate(conf["gold"]))
    assert "confusion" not in good["OVMERDPlus"]

    md = (a / "scores.md").read_text()
    # Synthetic data: the title says so and no paper number or delta sits beside the scores.
    assert md.startswith("# MER-UniBench on synthetic data\n")
    assert "| MELD | hit rate |" in md and "| CMUMOSI | WAF |" in md
    assert f"{PAPER['MELD']:.2f}" not in md and "Δ" not in md and "paper" not in md.split("\n\n")[1]
    assert "valence rules" in md
    page = (a / "report.html").read_text()
    assert "<title>MER-UniBench on synthetic data: report</title>" in page and "<th>paper</th>" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert "plots/bars.png" in images
    assert {f"plots/confusion_{d}.png" for d in ("MER2023", "IEMOCAPFour", "MELD")} <= set(images)
    for src in images:
        assert (a / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_real_folders_sets_the_paper_beside(unibench, wheel_dir, tmp_path):
    """Folders without the synthetic marker (as the real MER-UniBench): paper column and delta."""
    import shutil

    from scoring.unibench import SYNTHETIC_MARKER

    root = tmp_path / "real"
    for d in ("MELD", "CMUMOSI"):
        folder = DATASETS[d].folder
        shutil.copytree(unibench.root / folder, root / folder)
        (root / folder / SYNTHETIC_MARKER).unlink()
    scores = benchmark(bench_request("ckpt", root, tmp_path / "out", wheel_dir), labeler=tint_labeler)
    assert scores["synthetic"] is False and scores["paper"]["MELD"] == PAPER["MELD"] / 100
    md = (tmp_path / "out" / "scores.md").read_text()
    assert "| MELD | hit rate |" in md and f"{PAPER['MELD']:.2f}" in md
    assert f"{PAPER['CMUMOSI']:.2f}" in md and "| paper | Δ |" in md and "synthetic" not in md
    assert "<th>paper</th>" in (tmp_path / "out" / "report.html").read_text()


def test_failed_and_free_text_samples_score_as_empty(unibench, wheel_dir, tmp_path):
    def labeler(job, progress=None):
        table = tint_labeler(job)
        table.loc[0, ["status", "error", "text"]] = ["failed", "video/unreadable: x", ""]
        table.loc[1, "text"] = "In the text, nothing is said."
        return table

    scores = benchmark(bench_request("m", unibench.root, tmp_path, wheel_dir, datasets=["MELD"]), labeler=labeler)
    meld = scores["models"]["m"]["datasets"]["MELD"]
    assert meld["labeling"] == {"n": N, "failed": 1, "unparsed": 1}
    assert meld["score"] == pytest.approx(1 / 3)
    assert "1 failed to label and 1 were free text" in (tmp_path / "scores.md").read_text()


def test_sentiment_sets_with_llm_need_the_extractor(unibench, wheel_dir, tiny_models, tmp_path):
    """score.sentiment=llm keeps the reference's way: the extractor maps each list."""
    with pytest.raises(BenchmarkError, match="CMUMOSI are sentiment sets"):
        benchmark(bench_request("m", unibench.root, tmp_path, wheel_dir, "score.sentiment=llm", datasets=["mosi"]),
                  labeler=tint_labeler)
    found = benchmark(bench_request("m", unibench.root, tmp_path / "found", wheel_dir, "score.sentiment=llm"),
                      labeler=tint_labeler)
    assert "needs the LLM extractor" in found["skipped"]["CMUMOSI"]
    assert "CMUMOSI skipped" in (tmp_path / "found" / "scores.md").read_text()
    from scoring.parse import LLMExtractor

    extractor = LLMExtractor(tiny_models["llm"], batch_size=4, max_new_tokens=3)

    def labeler(job, progress=None):
        table = tint_labeler(job)
        table.loc[0, ["status", "text"]] = ["failed", ""]
        return table

    scores = benchmark(bench_request("m", unibench.root, tmp_path, wheel_dir, "score.sentiment=llm",
                                     datasets=["CMUMOSI"], extractor=extractor), labeler=labeler)
    mosi = scores["models"]["m"]["datasets"]["CMUMOSI"]
    assert mosi["metric"] == "sentiment" and 0.0 <= mosi["score"] <= 1.0
    # Templated outputs need only the sentiment mapping; the failed sample needs none.
    assert mosi["counts"]["llm_calls"] == N - 1
    assert mosi["labeling"]["failed"] == 1
    assert mosi["extraction"]["sentiment"] == {"failed": 1, "llm": N - 1}


def test_sentiment_sets_score_with_rules_without_an_llm(unibench, wheel_dir, tmp_path):
    """The default: every sentiment set found scores by the valence rules; failed, run-on and free
    text rows are recorded as such."""
    def labeler(job, progress=None):
        table = tint_labeler(job)
        table.loc[0, ["status", "text"]] = ["failed", ""]
        table.loc[1, "text"] = "In the text, he is happy about the film."
        table.loc[2, "text"] = ("The character's emotional state is " + table.loc[2, "labels"][0]
                                + ", nodding along while the interviewer keeps talking.")
        return table

    scores = benchmark(bench_request("m", unibench.root, tmp_path, wheel_dir, datasets=["CMUMOSI"]), labeler=labeler)
    mosi = scores["models"]["m"]["datasets"]["CMUMOSI"]
    assert mosi["counts"]["llm_calls"] == 0 and mosi["labeling"] == {"n": N, "failed": 1, "unparsed": 1}
    assert mosi["extraction"]["labels"] == {"runon": 1, "unparsed": 1}
    assert mosi["extraction"]["sentiment"] == {"failed": 1, "rules": 2}
    rows = pd.read_csv(tmp_path / "rows" / "00-m.csv", keep_default_na=False).set_index("name")
    assert sorted(rows["labels_from"]) == ["", "runon", "unparsed"]
    runon = rows[rows["labels_from"] == "runon"].iloc[0]
    assert runon["labels"] == f"[{MAIN_WORD[_emotion_of(runon.name, unibench)]}]"  # the run-on words dropped
    assert runon["sentiment_from"] == "rules" and runon["sentiment_rule"]
    assert "1 templated outputs ran on" in (tmp_path / "scores.md").read_text()
    # --extract rules: the free text's emotion words are spotted instead of scoring it empty.
    spotted = benchmark(bench_request("m", unibench.root, tmp_path / "s", wheel_dir, "score.extract=rules",
                                datasets=["CMUMOSI"]), labeler=labeler)
    ext = spotted["models"]["m"]["datasets"]["CMUMOSI"]["extraction"]
    assert ext["labels"] == {"runon": 1, "spotted": 1} and ext["extract"] == "rules"
    assert "spotted in the text (--extract rules)" in (tmp_path / "s" / "scores.md").read_text()


def _emotion_of(name: str, unibench) -> str:
    return unibench.emotions["CMUMOSI"][name]


def test_cli(unibench, wheel_dir, tmp_path, monkeypatch, capsys):
    import inference.benchmark as bm

    monkeypatch.setattr(bm, "label_table", tint_labeler)
    out = tmp_path / "out"
    code = run_cli("benchmark", "--model", "a", "--model", "b", "--unibench-root",
                   str(unibench.root), "--datasets", "MER2023,MELD", "--out", str(out),
                   "--wheel", str(wheel_dir), "--batch-size", "2", "--seed", "1")
    assert code == 0
    printed = capsys.readouterr().out
    assert "| MER2023 | hit rate |" in printed and (out / "report.html").is_file()
    assert json.loads((out / "scores.json").read_text())["seed"] == 1
    code = run_cli("benchmark", "--model", "a", "--unibench-root", str(tmp_path / "none"),
                   "--out", str(out), "--wheel", str(wheel_dir))
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = run_cli("benchmark", "--model", "a", "--unibench-root", str(unibench.root),
                   "--datasets", "CMUMOSI", "--out", str(out), "--wheel", str(wheel_dir), "--sentiment", "llm")
    assert code == 2 and "--extractor" in capsys.readouterr().err
    # By default the sentiment set scores without an LLM.
    code = run_cli("benchmark", "--model", "a", "--unibench-root", str(unibench.root),
                   "--datasets", "CMUMOSI", "--out", str(tmp_path / "mosi"), "--wheel", str(wheel_dir))
    assert code == 0 and "| CMUMOSI | WAF |" in capsys.readouterr().out


def test_synth_unibench_cli(tmp_path, capsys):
    assert run_cli("synth-unibench", str(tmp_path), "--n", "2", "--datasets", "MELD") == 0
    assert "MELD 2" in capsys.readouterr().out
    assert (tmp_path / "meld-process" / "label.npz").is_file()
    assert run_cli("synth-unibench", str(tmp_path), "--n", "2", "--datasets", "NOPE") == 2


def test_reference_result_files_rescore(unibench, wheel_dir, tmp_path, capsys):
    """`affectflow evaluate` on the reference release's own result files, against the synthetic
    label files: a ``name2reason`` npz of outputs, ``*-openset.npz`` and ``*-sentiment.npz``."""
    root = unibench.root

    def evaluate_json(dataset, predictions) -> dict:
        code = run_cli("evaluate", "--dataset", dataset, "--gt",
                       str(root / DATASETS[dataset].folder), "--predictions", str(predictions),
                       "--wheel", str(wheel_dir), "--json")
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return json.loads(captured.out)

    mer = load_gold("MER2023", root / DATASETS["MER2023"].folder)
    # Outputs as the reference's inference writes them: {name: text} pickled under name2reason.
    outputs = {n: TEMPLATE.format(MAIN_WORD[e]) + "###" for n, e in mer.items()}
    reasons = tmp_path / "checkpoint_000030_loss_0.512.npz"
    np.savez_compressed(reasons, name2reason=outputs)
    result = evaluate_json("MER2023", reasons)
    assert result["score"] == pytest.approx(1.0) and result["counts"]["gold"] == N

    ov = load_gold("OVMERDPlus", root / DATASETS["OVMERDPlus"].folder)
    names = sorted(ov)
    openset = tmp_path / "checkpoint_000030_loss_0.512-openset.npz"
    np.savez_compressed(openset, filenames=names,
                        fileitems=[str(ov[n]) for n in names])  # "['happy', 'joyful']" strings
    assert evaluate_json("OVMERDPlus", openset)["score"] == pytest.approx(1.0)
    table = tmp_path / "ov.csv"
    pd.DataFrame({"name": names, "openset": ["[" + ", ".join(ov[n]) + "]" for n in names]}
                 ).to_csv(table, index=False)
    assert evaluate_json("OVMERDPlus", table) == evaluate_json("OVMERDPlus", openset)

    mosi = load_gold("CMUMOSI", root / DATASETS["CMUMOSI"].folder)
    sentiment = tmp_path / "checkpoint_000030_loss_0.512-sentiment.npz"
    words = ["positive" if mosi[n] > 0 else "negative" for n in sorted(mosi)]
    np.savez_compressed(sentiment, filenames=sorted(mosi), fileitems=np.array(words, dtype=object))
    result = evaluate_json("CMUMOSI", sentiment)
    assert result["score"] == pytest.approx(1.0)


@pytest.mark.slow
def test_cli_benchmark_labels_with_a_trained_model(unibench, wheel_dir, models_dir, trained_checkpoint, ray_session,
                                                  tmp_path, capsys):
    """`affectflow benchmark` end to end with real labeling: a tiny model trained to answer with the label
    template labels the synthetic sets through the Ray job, and each set's score is printed by name."""
    out = tmp_path / "out"
    code = run_cli("benchmark", "--model", str(trained_checkpoint), "--unibench-root", str(unibench.root),
                   "--datasets", "MER2023,OVMERDPlus", "--out", str(out), "--wheel", str(wheel_dir),
                   "--models", str(models_dir), "--batch-size", "3", "--seed", "0",
                   "--set", "label.max_new_tokens=12", "--set", "ray.num_cpus=2")
    assert code == 0
    printed = capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    results = scores["models"][str(trained_checkpoint)]["datasets"]
    for dataset, metric in (("MER2023", "hit rate"), ("OVMERDPlus", "EW F-score")):
        result = results[dataset]
        assert result["labeling"]["n"] == N and result["labeling"]["failed"] == 0, result
        assert f"| {dataset} | {metric} | {100 * result['score']:.2f} |" in printed, printed
    # Every answer was generated, parsed from the template (no free text, no stand-in), and scored.
    rows = pd.concat([pd.read_csv(f, keep_default_na=False) for f in (out / "rows").glob("*.csv")])
    assert len(rows) == 2 * N and set(rows["labels_from"]) == {"template"}
    assert all(labels.startswith("[") and labels != "[]" for labels in rows["labels"])


def test_only_the_asked_task_is_scored_from_a_reused_table(unibench, wheel_dir, tmp_path):
    """A table that also holds another question's rows (an earlier run with --question) scores the OV ones."""

    def two_tasks(job, progress=None):
        good = tint_labeler(job)
        other = good.assign(task="question", text="Nothing to see here.", labels=[[] for _ in range(len(good))])
        return pd.concat([good, other]).sort_values(["name", "task"])

    one = ["label.batch_size=2", "seed=7"]
    mixed = benchmark(bench_request(["ckpt"], unibench.root, tmp_path / "mixed", wheel_dir, *one, datasets=["MER2023"]),
                      labeler=two_tasks)
    plain = benchmark(bench_request(["ckpt"], unibench.root, tmp_path / "plain", wheel_dir, *one, datasets=["MER2023"]),
                      labeler=tint_labeler)
    assert (
        mixed["models"]["ckpt"]["datasets"]["MER2023"]["score"]
        == plain["models"]["ckpt"]["datasets"]["MER2023"]["score"]
    )
    assert plain["models"]["ckpt"]["datasets"]["MER2023"]["score"] == pytest.approx(1.0)
