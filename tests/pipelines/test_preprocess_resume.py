"""kill -9 of `affectflow preprocess` mid-run, then a rerun: the store equals an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from features.store import FeatureStore
from pipelines.job import PreprocessRequest, preprocess
from tests.fixtures.pipeline import pipeline_config

pytestmark = pytest.mark.slow  # end-to-end jobs: `make test-slow` (CI runs both tiers)

# The shared fixtures (session-scoped: built once however many modules use them).


def _committed(fs: FeatureStore, specs) -> int:
    return len(fs.done_names(specs)) if fs.groups() else 0


def test_kill_9_then_rerun_equals_uninterrupted(ray_session, reference_store, synth_corpus, models_dir, tmp_path):
    ref = FeatureStore(str(reference_store[0]))
    specs = ref.specs()
    store = tmp_path / "killed.zarr"
    # The CLI joins this session's Ray (as a driver on a cluster would): killing the driver must
    # leave a store that the next run completes without duplicates or losses.
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    cmd = [
        sys.executable,
        "-m",
        "affectflow.cli",
        "preprocess",
        "--corpus",
        str(synth_corpus),
        "--store",
        str(store),
        "--models",
        str(models_dir),
        "--set",
        "preprocess.batch_size=2",
        "--set",
        "preprocess.write_batch_size=2",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fs = FeatureStore(str(store))
    killed_at = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            n = _committed(fs, specs)
            if 2 <= n < 24:
                proc.send_signal(signal.SIGKILL)
                killed_at = n
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_at is not None, f"the run ended (rc {proc.returncode}) before it could be killed mid-run"
    assert proc.returncode == -signal.SIGKILL
    # Ray kills the dead driver's actors; wait until no in-flight part lands any more.
    last, stable_since = _committed(fs, specs), time.monotonic()
    while time.monotonic() - stable_since < 3:
        time.sleep(0.5)
        now = _committed(fs, specs)
        if now != last:
            last, stable_since = now, time.monotonic()
    assert last < 24

    summary = preprocess(PreprocessRequest(synth_corpus, store, pipeline_config(), models=models_dir))
    assert summary.skipped == last and summary.ok == 24 - last and summary.failed == 0

    got = fs.read(specs, dtype=np.float32)
    want = ref.read(specs, dtype=np.float32)
    assert list(got["name"]) == list(want["name"]) and len(got["name"]) == 24
    for spec in specs:
        # Same inputs, same models; only the batch composition differs, which may move an fp16 ulp.
        np.testing.assert_allclose(got[spec.modality], want[spec.modality], rtol=2e-3, atol=1e-3)
    assert fs.samples()["name"].tolist() == ref.samples()["name"].tolist()
    # Nothing lost or duplicated in what readers see (checked above); underneath, every group's
    # committed parts cover all 24 samples. A sample whose metadata (or one modality) committed
    # just before the kill is written again by the rerun in a new part; reads take the latest
    # commit, so the older copy is dead weight that `store compact` drops, never a duplicate row.
    for group in fs.groups():
        parts, _uncommitted = fs._parts(group)
        names = {n for p in parts for n in p.names}
        assert names == set(want["name"]), group
