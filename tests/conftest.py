"""Shared fixtures: repo paths, the emotion-wheel folder, tiny models and a synthetic corpus built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Shared fixture modules (built on the session fixtures below).
pytest_plugins = ("tests.fixtures.pipeline", "tests.fixtures.inference")
# Keep test runs quiet and offline: nothing may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def command_logs(tmp_path_factory) -> Path:
    """The folder where commands run by the tests write their log files (not the working tree's .affectflow/logs)."""
    from core.console import LOG_DIR_ENV

    os.environ.setdefault(LOG_DIR_ENV, str(tmp_path_factory.mktemp("command-logs")))
    return Path(os.environ[LOG_DIR_ENV])


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def wheel_dir() -> Path:
    """The emotion-wheel files shipped in scoring/emotion_wheel/."""
    from scoring.wheel import default_wheel_dir

    return default_wheel_dir()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random CLIP / HuBERT / Qwen2 checkpoints, built once per test session."""
    from synth.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("models"), seed=0)


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """A 24-sample MER2025-layout corpus (real mp4/wav/npy/CSV), written once per test session."""
    from synth.corpus import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, n=24, seed=0)
    return root


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (starting Ray costs seconds; 2 CPUs as on CI)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc, what: str, timeout: float = 60.0) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet: any error means try again
            time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f}s")


def _stop(proc, log) -> None:
    """Terminate a server started by a fixture (kill it if it lingers) and close its log."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def start_mlflow(root: Path, port: int | None = None):
    """Start a real `mlflow server` on 127.0.0.1 (sqlite backend, local artifact root) under ``root``;
    returns ``(process, log file, uri)`` once it answers /health. ``port``: the one a killed server of
    the same ``root`` had (a restart), else a free one."""
    import subprocess
    import sys

    port = port or _free_port()
    log = open(root / "server.log", "a")
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    # Its own process group (uvicorn runs as a child: kill_mlflow ends both); no job runner (about ten
    # huey consumer processes, none of which tracking or the registry uses).
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{uri}/health", proc, "mlflow server", timeout=180.0)
    except BaseException:
        _stop(proc, log)
        raise
    return proc, log, uri


def kill_mlflow(proc, log) -> None:
    """An outage: SIGKILL to the server's process group (the `mlflow server` PID and its uvicorn child)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, local artifact root); yields its URI."""
    proc, log, uri = start_mlflow(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield uri
    finally:
        _stop(proc, log)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server on 127.0.0.1; yields the endpoint URL with fake credentials set in the environment."""
    import subprocess
    import sys

    port = _free_port()
    root = tmp_path_factory.mktemp("moto")
    log = open(root / "moto.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    try:
        _wait_http(f"{endpoint}/moto-api/", proc, "moto server")
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _stop(proc, log)
