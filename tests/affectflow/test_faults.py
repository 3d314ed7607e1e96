"""Fault injection, end to end through the command line: a tracking server that is down or never
answers, and the errors that must come early and clearly (real files, real sockets on 127.0.0.1)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.conftest import _free_port


@pytest.fixture
def silent_server():
    """A port on 127.0.0.1 that accepts connections and never answers; yields its http:// URI."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.2)
    held, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    sock.close()


@pytest.mark.parametrize("server", ["dead", "silent"])
def test_model_resolution_fails_within_seconds(server, silent_server, tiny_checkpoint, synth_corpus, capsys):
    from affectflow.cli import main

    uri = silent_server if server == "silent" else f"http://127.0.0.1:{_free_port()}"
    video = synth_corpus / "video" / "sample_00000002.mp4"
    t0 = time.perf_counter()
    code = main(["infer", str(video), "--model", "models:/affectgpt@latest", "--mlflow-uri", uri,
                 "--set", "mlflow.check_timeout_s=2"])
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and took < 15, took
    assert "cannot resolve models:/affectgpt@latest" in err and uri in err and "2s timeout" in err


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from synth.features import SyntheticFeatures, write_synthetic_store

    root = tmp_path_factory.mktemp("fault-train")
    write_synthetic_store(SyntheticFeatures(8, 768, 64, seed=1), str(root / "store.zarr"), str(root / "corpus"))
    return root / "store.zarr"


@pytest.mark.slow
def test_train_refuses_a_silent_server_at_once_and_runs_without_tracking(silent_server, train_data, tiny_models,
                                                                         tmp_path, capsys, ray_session):
    from affectflow.cli import main

    models = str(tiny_models["llm"].parent)
    args = ["train", "--store", str(train_data), "--models", models, "--mlflow-uri", silent_server,
            "--set", "mlflow.check_timeout_s=2", "--set", "train.global_batch_size=2",
            "--set", "train.micro_batch_size=2", "--set", "train.max_tokens=256"]
    t0 = time.perf_counter()
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - t0 < 15 and silent_server in err and "--no-track" in err
    assert not (tmp_path / "refused" / "ray").exists()  # refused before any work
    assert main([*args, "--out", str(tmp_path / "local"), "--no-track"]) == 0
    out = capsys.readouterr().out
    assert "not tracked (--no-track)" in out and f"affectflow register {tmp_path / 'local'}" in out
    assert (tmp_path / "local" / "metrics.jsonl").read_text().count("\n") == 4  # 8 samples / 2 per step


def test_bad_output_paths_fail_before_any_work(tmp_path, tiny_checkpoint, synth_corpus, models_dir, capsys):
    from affectflow.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    t0 = time.perf_counter()
    assert (
        main(["preprocess", "--corpus", str(synth_corpus), "--store", str(blocker), "--models", str(models_dir)]) == 2
    )
    assert f"--store {blocker} is a file, not a folder" in capsys.readouterr().err
    assert main(["label", "--input", str(synth_corpus), "--model", str(tiny_checkpoint), "--models", str(models_dir),
                 "--out", str(blocker / "labels.parquet")]) == 2
    assert f"{blocker} is a file, so nothing can be created under it" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 30  # no decoding, no model load
    with pytest.raises(SystemExit) as exit_:  # argparse's own usage error: exit 2
        main(["preprocess", "--corpus", str(synth_corpus), "--store", str(tmp_path / "s.zarr"), "--limit", "-1"])
    assert exit_.value.code == 2 and "argument --limit: must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.slow
def test_label_fails_over_its_failure_rate_and_says_how_to_retry(ray_session, tiny_checkpoint, synth_corpus,
                                                               models_dir, tmp_path, capsys):
    from affectflow.cli import main
    from tests.fixtures.pipeline import copy_corpus

    names = [f"sample_{i:08d}" for i in range(4)]
    corpus = copy_corpus(synth_corpus, tmp_path / "corpus", names)
    for name in names[:2]:
        (corpus / "video" / f"{name}.mp4").unlink()
    args = ["label", "--input", str(corpus), "--model", str(tiny_checkpoint), "--models", str(models_dir),
            "--out", str(tmp_path / "labels.parquet"), "--max-new-tokens", "4", "--set", "ray.num_cpus=2",
            "--set", "preprocess.object_store_mb=300"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "2 failed (50.00% of the table" in out and "--retry-failed" in out
    # Raw media is labeled under preprocessing's object-store budget, as preprocessing is.
    import ray.data

    assert ray.data.DataContext.get_current().execution_options.resource_limits.object_store_memory == 300 * 2**20
    assert main(args) == 1  # the rerun labels nothing and still reports the recorded failures, by name
    out = capsys.readouterr().out
    assert "table now: 2 ok, 2 failed" in out and "2 failed in an earlier run" in out
    assert "the failures recorded:" in out and "fix those inputs, then rerun with --retry-failed" in out
    for name in names[:2]:
        assert f"  {name} (ov): manifest/missing-file: " in out
    assert main([*args, "--max-failure-rate", "0.5"]) == 0
