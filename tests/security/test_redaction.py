"""Finding 5: secrets in logs and MLflow. The log header recorded the whole command line, with
``--storage-options '{"key": ..., "secret": ...}'``, in a world-readable log; a tracking URI with
``user:token@`` landed in MLflow params, ``train_config.yaml``, the config artifact and printed
commands. Now both are masked everywhere we write (`core.redact`) and logs are created 0600.

The run test plants one secret in a preprocessing run's storage options and a training run's
tracking URI (a real MLflow server on 127.0.0.1 behind that URI), then reads every file the runs
wrote (the output folders, the command logs, the MLflow server's database and artifacts, this
Ray session's logs written meanwhile) and what the console printed: the secret is in none."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from core.config import dump_yaml, flatten, load_config
from core.errors import TrackingError
from core.redact import redact_argv, redact_text, redact_uri
from core.tracking import require_tracking

SECRET = "PLANTED-7c1e-s3cr3t"


def test_uri_credentials_are_masked():
    assert redact_uri(f"http://alice:{SECRET}@mlflow.internal:5000") == "http://alice:***@mlflow.internal:5000"
    assert redact_uri(f"https://h/x?X-Amz-Signature={SECRET}&a=1") == "https://h/x?X-Amz-Signature=***&a=1"
    assert redact_uri("s3://bucket/store.zarr") == "s3://bucket/store.zarr"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_command_lines_and_text_are_masked():
    argv = ["preprocess", "--storage-options", json.dumps({"key": "AKIA", "secret": SECRET}),
            f"--storage-options={json.dumps({'token': SECRET})}", "--mlflow-uri", f"http://a:{SECRET}@h",
            "--set", f"mlflow.tracking_uri=http://a:{SECRET}@h"]
    assert SECRET not in " ".join(redact_argv(argv))
    assert redact_argv(argv)[:3] == ["preprocess", "--storage-options", "***"]
    text = f'--storage-options: not JSON: \'{{"secret": "{SECRET}", "anon": false}}\''
    assert SECRET not in redact_text(text) and '"anon": false' in redact_text(text)


def test_config_written_or_logged_has_no_uri_credentials():
    cfg = load_config(None, [f"mlflow.tracking_uri=http://alice:{SECRET}@127.0.0.1:5000"])
    assert cfg.mlflow.tracking_uri.endswith(f"{SECRET}@127.0.0.1:5000")  # the run itself still uses it
    assert SECRET not in dump_yaml(cfg) and "alice:***@127.0.0.1" in dump_yaml(cfg)
    assert flatten(cfg)["mlflow.tracking_uri"] == "http://alice:***@127.0.0.1:5000"


def test_cli_errors_never_print_the_secret(tmp_path, capsys):
    """Errors built from the secret (a bad --storage-options JSON, a dead server's URI) print masked."""
    from affectflow.cli import main

    bad_json = '{"secret": "' + SECRET + '", '
    assert main(["preprocess", "--corpus", str(tmp_path), "--store", str(tmp_path / "s.zarr"),
                 "--storage-options", bad_json]) == 2
    printed = capsys.readouterr()
    assert "--storage-options" in printed.err and SECRET not in printed.out + printed.err, printed.err
    with pytest.raises(TrackingError) as info:
        require_tracking(f"http://alice:{SECRET}@127.0.0.1:9", 1.0)
    assert "alice:***@127.0.0.1:9" in str(info.value) and SECRET not in str(info.value)


def _files_with(root: Path, secret: bytes, since: float = 0.0) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        try:
            fresh = path.is_file() and not path.is_symlink() and path.stat().st_mtime >= since
            if fresh and secret in path.read_bytes():
                hits.append(str(path))
        except OSError:
            continue
    return hits


@pytest.fixture(scope="module")
def secret_server(tmp_path_factory):
    from tests.conftest import start_mlflow

    root = tmp_path_factory.mktemp("redaction-mlflow")
    proc, log, uri = start_mlflow(root)
    try:
        yield root, uri.replace("http://", f"http://alice:{SECRET}@")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_no_run_file_log_or_mlflow_record_holds_the_secret(ray_session, secret_server, synth_corpus, models_dir,
                                                           tiny_models, tmp_path, monkeypatch, capsys):
    from affectflow.cli import main
    from core.console import LOG_DIR_ENV
    from synth.features import SyntheticFeatures, write_synthetic_store

    started = time.time()
    logs = tmp_path / "logs"
    monkeypatch.setenv(LOG_DIR_ENV, str(logs))
    server_root, uri = secret_server
    options = json.dumps({"key": "AKIA-PLANTED", "secret": SECRET, "auto_mkdir": True})
    assert main(["preprocess", "--corpus", str(synth_corpus), "--store", str(tmp_path / "pre.zarr"), "--models",
                 str(models_dir), "--limit", "2", "--storage-options", options, "--set", "ray.num_cpus=2"]) == 0
    write_synthetic_store(SyntheticFeatures(4, 768, 64, seed=1), str(tmp_path / "store.zarr"), str(tmp_path / "corpus"))
    code = main(["train", "--store", str(tmp_path / "store.zarr"), "--out", str(tmp_path / "run"), "--models",
                 str(Path(tiny_models["llm"]).parent), "--mlflow-uri", uri, "--workers", "1",
                 "--set", "train.global_batch_size=2", "--set", "train.micro_batch_size=2",
                 "--set", "train.max_tokens=128", "--set", "train.steps_per_epoch=1", "--set", "train.epochs=1"])
    printed = capsys.readouterr()
    assert code in (0, 1), printed.err[-2000:]
    secret = SECRET.encode()
    assert secret not in (printed.out + printed.err).encode(), "the console printed the secret"
    log_files = sorted(logs.glob("*.log"))
    assert log_files, "the runs kept no log"
    for log in log_files:
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, f"{log} is {oct(log.stat().st_mode)}"
    assert any("--storage-options ***" in p.read_text() for p in log_files)
    hits = _files_with(tmp_path, secret) + _files_with(server_root, secret)
    session = Path("/tmp/ray/session_latest")
    if session.exists():
        hits += _files_with(session.resolve() / "logs", secret, since=started)
    assert not hits, f"the secret is in {hits}"
    # What MLflow holds was written: the run's params and its config artifact, with the URI masked.
    assert "alice:***@127.0.0.1" in (tmp_path / "run" / "train_config.yaml").read_text()
