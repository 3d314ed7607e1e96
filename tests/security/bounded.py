"""Run a hostile input in a child process under a memory cap, and report what it cost.

A test of bounded memory cannot measure in its own process (its peak includes every earlier
test). The child gets an address-space limit (so a regression fails with MemoryError instead of
taking the shared machine's memory). Its peak RSS is the kernel's high-water mark of the child's
own address space (``VmHWM`` in ``/proc/<pid>/status``), which the child reports at exit and the
parent polls meanwhile (``wait4``'s ``ru_maxrss`` would count the forked test process too).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ChildRun:
    returncode: int
    out: str
    err: str
    peak_rss_mb: float
    seconds: float

    def describe(self) -> str:
        tail = (self.err or "").strip().splitlines()[-3:]
        return (f"exit {self.returncode}, peak RSS {self.peak_rss_mb:.0f} MiB, {self.seconds:.1f} s; "
                f"stdout {self.out.strip()[-300:]!r}; stderr tail {tail}")


_REPORT = """
import atexit as _atexit, sys as _sys
def _affectflow_hwm():
    with open('/proc/self/status') as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith('VmHWM'))
    _sys.stderr.write('\\n@@VmHWM %d\\n' % kb)
_atexit.register(_affectflow_hwm)
"""


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration, ValueError):
        return 0


def _exec_done(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[1:2] == [b"-c"]
    except OSError:
        return True


def run_child(code: str, *, address_space_mb: int = 3072, timeout_s: float = 120.0) -> ChildRun:
    """Run ``code`` with ``python -c`` in the repo, address space capped at ``address_space_mb``."""
    limit = address_space_mb * 2**20

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _REPORT + code], cwd=REPO, env=env, preexec_fn=cap,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    polled = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set() and not _exec_done(proc.pid):  # before the exec it is the test's own image
            time.sleep(0.005)
        while not done.is_set():
            polled[0] = max(polled[0], _hwm_kb(proc.pid))
            time.sleep(0.02)

    threads = [threading.Thread(target=poll, daemon=True)]
    out_parts: list[str] = []
    threads.append(threading.Thread(target=lambda: out_parts.append(proc.stdout.read()), daemon=True))
    for t in threads:
        t.start()
    try:
        err = _read_err(proc, timeout_s)
    finally:
        done.set()
    threads[1].join()
    reported = [int(line.split()[1]) for line in err.splitlines() if line.startswith("@@VmHWM ")]
    err = "\n".join(line for line in err.splitlines() if not line.startswith("@@VmHWM "))
    peak_kb = max([polled[0], *reported])
    run = ChildRun(proc.returncode, "".join(out_parts), err, peak_kb / 1024, time.perf_counter() - t0)
    print(f"child run: {run.describe()}")  # the figures, shown with pytest -rP
    return run


def _read_err(proc: subprocess.Popen, timeout_s: float) -> str:
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        err = proc.stderr.read()
        proc.wait()
    finally:
        timer.cancel()
    return err
