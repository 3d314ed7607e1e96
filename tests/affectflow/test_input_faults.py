"""Small faults a new user meets, each a clear message: a malformed list option, a corpus link that leaves
its root in any layout, and a rerun whose failure gate names the failures it counts."""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.slow  # end-to-end jobs: `make test-slow` (CI runs both tiers)


@pytest.mark.parametrize("option, value, shown", [
    ("--labels", "[happy, sad", "'[happy, sad'"),
    ("--valence-range", "-3,3]", "'[-3,3]]'"),
])
def test_a_malformed_list_option_is_an_error_naming_it(option, value, shown, tmp_path, capsys):
    """Once a raw PyYAML traceback with exit 1 (the 'too many failures' code); now exit 2, before any work."""
    from affectflow.cli import main

    t0 = time.perf_counter()
    code = main(["label", "--input", str(tmp_path), "--model", str(tmp_path), "--out", str(tmp_path / "x.parquet"),
                 f"{option}={value}"])
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - t0 < 10
    assert err.startswith(f"affectflow label: error: {option} {value!r}: ") and f"{shown} is not a list" in err
    assert "Traceback" not in err and "write a,b,c or [a, b, c]" in err


def _mer2025(root, outside):
    """A MER2025 root: one real sample, one whose video links to a file outside the root, one whose face
    folder links outside, one whose wav links inside the root (allowed)."""
    for sub in ("video", "audio", "openface_face/ok", "openface_face/inside"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "video" / "ok.mp4").write_bytes(b"video")
    (root / "video" / "evil.mp4").symlink_to(outside / "secret.mp4")
    (root / "video" / "facey.mp4").write_bytes(b"video")
    (root / "openface_face" / "facey").symlink_to(outside, target_is_directory=True)
    (root / "video" / "inside.mp4").write_bytes(b"video")
    (root / "audio" / "inside.wav").symlink_to(root / "video" / "inside.mp4")
    (root / "subtitle_chieng.csv").write_text("name,english\nok,hi\nevil,hi\nfacey,hi\ninside,hi\n", encoding="utf-8")


def test_links_out_of_the_root_fail_their_row_in_every_layout(tmp_path):
    from pipelines.manifest import read_folder, read_mer2025, read_unibench

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"not yours")
    (outside / "facey.npy").write_bytes(b"not yours")
    root = tmp_path / "mer"
    _mer2025(root, outside)
    rows = {r.name: r.error for r in read_mer2025(root)}
    assert rows["ok"] == "" and rows["inside"] == ""
    assert rows["evil"] == (f"manifest/link-outside-root: {root / 'video' / 'evil.mp4'} -> {outside / 'secret.mp4'} "
                            f"leaves the corpus root {root} (pass --follow-symlinks to read it)")
    assert rows["facey"].startswith("manifest/link-outside-root: ") and str(outside / "facey.npy") in rows["facey"]
    assert all(not e for e in (r.error for r in read_mer2025(root, follow_symlinks=True)))

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "evil.mp4").symlink_to(outside / "secret.mp4")
    assert [r.error.split(":")[0] for r in read_folder(folder)] == ["manifest/link-outside-root"]

    bench = tmp_path / "bench" / "ovmerdplus-process"  # MER-UniBench's OV-MERD+ folder, as released
    (bench / "video").mkdir(parents=True)
    (bench / "ovlabel.csv").write_text("name,openset\nok_1,[happy]\nevil_1,[sad]\n", encoding="utf-8")
    (bench / "subtitle_chieng.csv").write_text("name,english\nok_1,hi\nevil_1,hi\n", encoding="utf-8")
    (bench / "video" / "ok_1.mp4").write_bytes(b"video")
    os.symlink(outside / "secret.mp4", bench / "video" / "evil_1.mp4")
    rows = {r.name: r.error for r in read_unibench("OVMERDPlus", tmp_path / "bench")}
    assert rows["ok_1"] == "" and rows["evil_1"].startswith("manifest/link-outside-root: ")


def test_a_failed_gate_names_the_recorded_failures(capsys):
    """A rerun that processed nothing still lists what it counts: the first 10 by name, then the rest's count."""
    from affectflow.options import failure_gate
    from pipelines.summary import JobSummary

    failures = [(f"sample_{i:02d}", f"video/missing: video/sample_{i:02d}.mp4 does not exist") for i in range(12)]
    summary = JobSummary(state_ok=8, state_failed=12, state_examples=failures)
    assert failure_gate(summary, 0.01, "label") == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("affectflow label: 12 failed (60.00% of the output, this run's and earlier ones') exceeds "
                        "--max-failure-rate 1.00%; the failures recorded:")
    assert lines[1:11] == [
        f"  sample_{i:02d}: video/missing: video/sample_{i:02d}.mp4 does not exist" for i in range(10)
    ]
    assert lines[11:] == ["  ... and 2 more", "fix those inputs, then rerun with --retry-failed"]


def test_compact_keeps_samples_stored_without_labels_apart(tmp_path, capsys):
    """A store whose first part predates stored labels: after `store compact` its samples still read as
    'stored without labels' (train then asks for --corpus), not as samples labelled with nothing."""
    from affectflow.cli import main
    from features.reader import stored_labels
    from synth.features import SyntheticFeatures, write_synthetic_store

    store = str(tmp_path / "store.zarr")
    write_synthetic_store(SyntheticFeatures(4, 8, 4, seed=2), store, str(tmp_path / "c1"), labels_in_store=False)
    later = SyntheticFeatures(6, 8, 4, seed=3)
    later.items = later.items[4:]  # synth_00004, synth_00005, with labels
    write_synthetic_store(later, store, str(tmp_path / "c2"))
    before = stored_labels(store)
    assert before[1] == [f"synth_{i:05d}" for i in range(4)]
    assert main(["store", "compact", store, "--part-size", "256"]) == 0
    table, without = stored_labels(store)
    assert without == before[1] and list(table["name"]) == ["synth_00004", "synth_00005"]
    assert list(table["openset"]) == list(before[0]["openset"])


def test_labeling_a_one_part_store_writes_per_batch(ray_session, small_store, tiny_checkpoint, tmp_path):
    """The session store is one stored part of five samples. Its rows reach the table a batch at a time
    (they used to come out only when the whole part was labeled), so an interrupt after the first batch
    keeps that batch, and the rerun labels only the rest."""
    from core.config import load_config
    from inference.labeling import LabelRequest, label
    from inference.table import parts_dir, read_table

    cfg = load_config(None, ["ray.num_cpus=2", "label.batch_size=2", "label.max_new_tokens=2"])
    out = tmp_path / "labels.parquet"

    def interrupt(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        label(LabelRequest(small_store, str(tiny_checkpoint), out, cfg), on_batch=interrupt)
    kept = [read_table(p).num_rows for p in parts_dir(out).glob("*.parquet")]
    assert kept == [2]  # the first batch of two samples (task ov), written before the interrupt
    batches: list[int] = []
    summary = label(LabelRequest(small_store, str(tiny_checkpoint), out, cfg), on_batch=batches.append)
    assert summary.skipped == 2 and batches == [2, 1] and summary.rows == 5


def test_ctrl_c_as_the_command_ends_is_a_clean_130(ray_session, small_store, tiny_checkpoint, tmp_path):
    """The console script, joined to the session's Ray: SIGINT as soon as the summary is printed lands in
    Ray's shutdown or Python's exit, where it used to print a KeyboardInterrupt traceback and exit 0. Now the
    command stops Ray inside its console (Ray's messages go to the log) and exits 130, no traceback."""
    import signal
    import subprocess
    import sys

    import ray

    from tests.conftest import REPO

    argv = ["label", "--input", str(small_store), "--model", str(tiny_checkpoint), "--out",
            str(tmp_path / "labels.parquet"), "--max-new-tokens", "2", "--batch-size", "5", "--set", "ray.num_cpus=2"]
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    proc = subprocess.Popen([sys.executable, "-m", "affectflow.cli", *argv], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stdout:
        if line.startswith("time: "):  # the summary's last line: the work is done
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "(raylet)" not in err, err[-2000:]
