"""A command's console: its own lines on the terminal; library output, warnings and Ray's in the log.

Output is captured at the file descriptors (capfd), so anything that reached the real stdout or
stderr, from Python or from C, would show up in the capture.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from core.config import load_config
from core.console import command_console, current, echo, progress
from core.runtime import init_ray

REPO = Path(__file__).resolve().parents[2]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python's own way to show a warning (pytest records them instead): formatted, onto sys.stderr as it is now."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _library_noise(token: str) -> None:
    """What libraries do while a job runs: warnings, their loggers, stray prints, C-level and child output."""
    from transformers.utils import logging as hf_logging

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning
        warnings.warn(f"warning-{token}", UserWarning)
    # transformers' own handler (made when transformers first logged, maybe long before this command).
    hf_logging.get_logger("transformers.test_console").warning(f"logger-{token}")
    print(f"print-{token}")
    os.write(2, f"fd2-{token}\n".encode())
    subprocess.run([sys.executable, "-c", f"print('child-{token}')"], check=True)


def test_quiet_console_logs_the_rest_and_names_the_log(capfd, tmp_path):
    with command_console("unit", directory=tmp_path) as console:
        echo("my summary line")
        _library_noise("q7x")
        with progress("stage", unit="videos") as bar:
            bar(3, 4)
            bar(1, 4)
    out, err = capfd.readouterr()
    assert out == "my summary line\n"
    log = console.log_path
    assert log.parent == tmp_path and log.name.startswith("unit-") and log.suffix == ".log"
    assert err.count(f"log -> {log}") == 1
    assert "stage: 100%" in err and "4/4" in err
    assert "q7x" not in out + err
    text = log.read_text()
    for what in ("warning", "logger", "print", "fd2", "child"):
        assert f"{what}-q7x" in text, what
    assert "my summary line" in text and "4/4" in text
    # Afterwards the process's streams are its own again.
    print("after")
    os.write(2, b"after-fd2\n")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == "after-fd2\n"


def test_a_quiet_command_that_logged_nothing_leaves_no_log(capfd, tmp_path):
    with command_console("unit", directory=tmp_path):
        echo("only mine")
    out, err = capfd.readouterr()
    assert (out, err) == ("only mine\n", "")
    assert list(tmp_path.iterdir()) == []


def test_verbose_console_shows_everything_and_writes_no_log(capfd, tmp_path):
    import logging

    # Verbose leaves every handler where it points. In a CLI process transformers' handler points
    # at the process's stderr; in this test session it may still point at an earlier test's
    # captured stream, so point it at this test's, as a fresh process would have it.
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers.test_console")  # makes transformers' handler if it is not there yet
    for handler in logging.getLogger("transformers").handlers:
        if type(handler) is logging.StreamHandler:  # transformers' own (not pytest's capture handlers)
            handler.setStream(sys.stderr)
    with command_console("unit", verbose=True, directory=tmp_path) as console:
        echo("my summary line")
        _library_noise("verbose")
    out, err = capfd.readouterr()
    assert "my summary line" in out
    for what in ("warning", "logger", "fd2"):
        assert f"{what}-verbose" in err, what
    assert "print-verbose" in out and "child-verbose" in out
    assert console.log_path is None and list(tmp_path.iterdir()) == []


def test_ray_worker_print_stays_in_rays_session_logs(ray_session, capfd, tmp_path):
    """A task's print, under a quiet console: not on the terminal; in the session's worker logs the console names."""
    import ray

    @ray.remote(num_cpus=0)
    def talk(token: str) -> int:
        print(token, flush=True)
        print(token, file=sys.stderr, flush=True)
        return os.getpid()

    token = f"worker-print-{os.getpid()}-{tmp_path.name}"
    with command_console("unit", directory=tmp_path) as console:
        init_ray(load_config())  # Ray is up (the session's): it names the logs and returns
        pid = ray.get(talk.remote(token))
        assert not current().verbose
    out, err = capfd.readouterr()
    assert token not in out + err
    (logs,) = console.ray_sessions
    assert f"Ray workers' output -> {logs}" in err
    files = [p for p in Path(logs).glob(f"worker-*-{pid}.*") if p.suffix in (".out", ".err")]
    assert {p.suffix for p in files if token in p.read_text(errors="replace")} == {".out", ".err"}


@pytest.mark.slow
def test_verbose_forwards_ray_workers_output(tmp_path):
    """``--verbose``: a local Ray started by `init_ray` forwards a task's print to the driver's stdout."""
    script = (
        "import ray\n"
        "from core.config import load_config\n"
        "from core.console import command_console\n"
        "from core.runtime import init_ray\n"
        "@ray.remote(num_cpus=0)\n"
        "def talk():\n"
        "    print('forwarded-from-worker', flush=True)\n"
        f"with command_console('unit', verbose=True, directory={str(tmp_path)!r}):\n"
        "    init_ray(load_config(None, ['ray.num_cpus=1']))\n"
        "    ray.get(talk.remote())\n"
        "    import time; time.sleep(2)\n"  # the log monitor forwards asynchronously
        "    ray.shutdown()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "forwarded-from-worker" in done.stdout, (done.stdout[-2000:], done.stderr[-2000:])
    assert list(tmp_path.iterdir()) == []


def test_outside_a_command_the_console_is_the_process_streams(capfd):
    assert current().verbose and current().log_path is None
    echo("plain")
    assert capfd.readouterr().out == "plain\n"
