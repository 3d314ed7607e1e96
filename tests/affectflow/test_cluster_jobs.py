"""`ray job submit` on a real 2-node Ray cluster on this machine: preprocessing through the Jobs API.

The cluster is two ``ray start --block`` processes (a head and a second node with its own
``node2`` resource), each in its own process group with its own ports and ``--temp-dir``, so
they never touch the session's local Ray (``ray_session``) or anyone else's: teardown kills
exactly those two process groups (``ray stop`` would stop every Ray on the machine). Token
authentication (Ray >= 2.60's default for ``ray start``) is off: the cluster listens on
127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.fixtures.pipeline import models_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow  # end-to-end jobs: `make test-slow` (CI runs both tiers)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 240


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _free_range(width: int) -> int:
    """The first port of ``width`` consecutive free ports in 20000-32767 (below the ephemeral range)."""
    start = 20000 + (os.getpid() * 131) % 12000
    for base in list(range(start, 32768 - width, width)) + list(range(20000, start, width)):
        try:
            with ExitStack() as stack:
                for port in range(base, base + width):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {width} consecutive free ports in 20000-32767")


def cluster_env() -> dict[str, str]:
    """Cluster processes' environment: this venv first on PATH, no token auth, no usage stats, patient node start."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # A node's `ray start` gives up when the GCS has not seen its raylet within 30 s (Ray's default);
    # on a loaded 2-core box the second node once missed that (seen in `make test`).
    env["RAY_raylet_start_wait_time_s"] = "90"
    env.pop("RAY_ADDRESS", None)
    return env


def _node_ports(worker_base: int) -> list[str]:
    manager, objects, metrics, agent_http, agent_grpc, env_agent = _free_ports(6)
    return ["--node-manager-port", str(manager), "--object-manager-port", str(objects),
            "--metrics-export-port", str(metrics), "--dashboard-agent-listen-port", str(agent_http),
            "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(env_agent),
            "--min-worker-port", str(worker_base), "--max-worker-port", str(worker_base + 49)]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class LocalCluster:
    """A head and one more node started with ``ray start --block`` on 127.0.0.1; `close` kills both groups."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.address = self.dashboard = ""

    def start(self) -> None:
        gcs, dash, client = _free_ports(3)
        workers = _free_range(100)
        self.address = f"127.0.0.1:{gcs}"
        self.dashboard = f"http://127.0.0.1:{dash}"
        self._start("head", [
            "--head", "--port", str(gcs), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
            "--resources", json.dumps({"head": 1}), *_node_ports(workers)])
        self._wait(lambda: _get_json(f"{self.dashboard}/api/version"), "the head's dashboard", 90)
        self._start("node2", [
            "--address", self.address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
            "--resources", json.dumps({"node2": 1}), *_node_ports(workers + 50)])
        self._wait(lambda: len(self.alive_nodes()) >= 2 or None, "two alive nodes", 90)

    def _start(self, name: str, args: list[str]) -> None:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.procs.append(subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", "--temp-dir", str(self.root / "ray"),
                 "--disable-usage-stats", *args],
                stdout=out, stderr=subprocess.STDOUT, env=cluster_env(), cwd=self.root, start_new_session=True))

    def _wait(self, probe, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, log in zip(self.procs, self.logs):
                if p.poll() is not None:
                    raise RuntimeError(f"`ray start` exited ({p.returncode}) while waiting for {what}:\n"
                                       + log.read_text(errors="replace")[-3000:])
            try:
                if probe():
                    return
            except Exception:  # noqa: BLE001 - not ready yet: any error means try again
                pass
            time.sleep(1)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.root}")

    def alive_nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        return [n for n in list_nodes(address=self.dashboard) if n.state == "ALIVE"]

    def close(self) -> None:
        """SIGTERM each node's process group (raylet, GCS, workers), then SIGKILL what is left."""
        for p in reversed(self.procs):
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            _signal_group(p, signal.SIGKILL)
            p.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster():
    # A short root: Ray's unix socket paths under --temp-dir must stay under 107 characters.
    root = Path(tempfile.mkdtemp(prefix="afc-", dir="/tmp"))
    made = LocalCluster(root)
    try:
        made.start()
        yield made
    finally:  # also after a failed start: a head may be up while the second node failed
        made.close()
        shutil.rmtree(root, ignore_errors=True)


def _job_logs(client, job_id: str) -> str:
    try:
        return client.get_job_logs(job_id)
    except Exception as exc:  # noqa: BLE001 - the logs are for the failure message only
        return f"(no logs: {exc})"


def wait_job(client, job_id: str, timeout: float = JOB_TIMEOUT_S) -> str:
    """Poll until the job ends; its logs on failure or timeout."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    status = client.get_job_status(job_id)
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(2)
    else:
        client.stop_job(job_id)
        pytest.fail(f"job {job_id} still {status} after {timeout:.0f}s; logs:\n{_job_logs(client, job_id)[-6000:]}")
    logs = _job_logs(client, job_id)
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(job_id)
        pytest.fail(f"job {job_id} ended {status}: {info.message}\nlogs:\n{logs[-6000:]}")
    return logs


def test_working_dir_package_is_small():
    """What ``--working-dir .`` uploads (Ray skips git-ignored paths) stays far below Ray's 100 MiB limit."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    size = sum((REPO / f).stat().st_size for f in listed if f and (REPO / f).is_file())
    assert size < 20 * 2**20, f"the working dir ships {size / 2**20:.1f} MiB"


def test_preprocess_job_on_two_nodes(cluster, synth_corpus, models_dir, tmp_path):  # noqa: F811
    """`affectflow preprocess` submitted as a job runs on the second node from the shipped working dir."""
    from ray.job_submission import JobSubmissionClient

    from features.store import FeatureStore

    assert len(cluster.alive_nodes()) == 2
    store = tmp_path / "store.zarr"
    client = JobSubmissionClient(cluster.dashboard)
    entrypoint = (
        "python -c 'import affectflow, os; print(\"code-from\", os.path.dirname(os.path.dirname(affectflow.__file__)))'"
        f" && affectflow preprocess --corpus {synth_corpus} --store {store} --models {models_dir} --limit 8"
        " --set preprocess.batch_size=4"
    )
    job_id = client.submit_job(
        entrypoint=entrypoint,
        # The driver must run on the second node: proves the working dir is shipped and unpacked there.
        entrypoint_resources={"node2": 1},
        runtime_env={"working_dir": str(REPO), "env_vars": {"RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
                                                              "TRANSFORMERS_OFFLINE": "1"}},
    )
    logs = wait_job(client, job_id)
    code_from = [ln.split(" ", 1)[1] for ln in logs.splitlines() if ln.startswith("code-from ")]
    assert code_from and Path(code_from[0]) != REPO and "working_dir_files" in code_from[0], logs[-3000:]
    assert "ok: 8" in logs, logs[-3000:]

    fs = FeatureStore(str(store))
    report = fs.inspect()
    assert report["samples"]["ok"] == 8 and report["samples"]["failed"] == 0, report["samples"]
    assert {g.get("modality") for g in report["groups"]} >= {"frame", "face", "audio"}

    # Resubmitting is resuming: nothing is left to do.
    job_id = client.submit_job(entrypoint=entrypoint.split(" && ", 1)[1], entrypoint_resources={"node2": 1},
                               runtime_env={"working_dir": str(REPO), "env_vars": {"RAY_AUTH_MODE": "disabled"}})
    logs = wait_job(client, job_id)
    assert "8 already stored (skipped), 0 processed" in logs, logs[-3000:]
