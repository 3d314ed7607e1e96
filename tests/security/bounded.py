"""Run a hostile input in a child process under a memory cap, and report what it cost.

A test of bounded memory cannot measure in its own process (its peak includes every earlier
test). The child gets an address-space limit (so a regression fails with MemoryError instead of
taking the shared machine's memory), and its peak RSS comes back from the kernel (``wait4``).
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


def run_child(code: str, *, address_space_mb: int = 3072, timeout_s: float = 120.0) -> ChildRun:
    """Run ``code`` with ``python -c`` in the repo, address space capped at ``address_space_mb``."""
    limit = address_space_mb * 2**20

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, preexec_fn=cap,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    out_parts: list[str] = []
    reader = threading.Thread(target=lambda: out_parts.append(proc.stdout.read()), daemon=True)
    reader.start()
    err = proc.stderr.read()
    reader.join()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(proc.returncode, "".join(out_parts), err, usage.ru_maxrss / 1024, time.perf_counter() - t0)
