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
