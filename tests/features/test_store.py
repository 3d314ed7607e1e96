"""The Zarr feature store: round trip, failures, commit protocol, resume, spec groups, concurrent writers, inspect."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import numpy as np
import pytest

from core.errors import StoreError
from features.spec import EncoderSpec, hash_weights
from features.store import SAMPLES, FeatureStore, feature_group, part_id_for

REPO = Path(__file__).resolve().parents[2]
FACE = EncoderSpec(
    "face", "clip:tiny", "aaaa", "image_embeds", "none", 16, preprocess={"image_size": 224, "faces": "openface"}
)
AUDIO = EncoderSpec("audio", "hubert:tiny", "bbbb", "mean_last_4", "time_mean", 12, preprocess={"sample_rate": 16000})


def features_of(name: str, spec: EncoderSpec, salt: int = 0) -> np.ndarray:
    """Deterministic per-name features, so any reader can check what it got."""
    seed = int.from_bytes(f"{name}/{spec.spec_id()}/{salt}".encode()[-8:].rjust(8, b"\0"), "little") % (2**32)
    return np.random.default_rng(seed).standard_normal(spec.shape).astype(np.float32)


def make_batch(names, failed=(), specs=(FACE, AUDIO), salt=0) -> dict:
    return {
        "name": np.array(names, dtype=object),
        "subtitle": np.array([f"subtitle of {n}" for n in names], dtype=object),
        "status": np.array(["failed" if n in failed else "ok" for n in names], dtype=object),
        "error": np.array(
            [f"decode: corrupt video /corpus/video/{n}.mp4" if n in failed else "" for n in names], dtype=object
        ),
        **{s.modality: np.stack([features_of(n, s, salt) for n in names]) for s in specs},
    }


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path) -> FeatureStore:
    path = str(tmp_path / "store.zarr") if request.param == "local" else f"memory://store-{uuid.uuid4().hex}"
    return FeatureStore(path)


def test_spec_id_is_canonical_and_round_trips():
    a = EncoderSpec("face", "clip", "h", "image_embeds", "none", 768, preprocess={"b": 2, "a": "1"})
    b = EncoderSpec("face", "clip", "h", "image_embeds", "none", 768, preprocess=(("a", "1"), ("b", "2")))
    assert a == b and a.spec_id() == b.spec_id() and len(a.spec_id()) == 12
    assert EncoderSpec.from_json(a.to_json()) == a
    assert (
        a.spec_id()
        != EncoderSpec("face", "clip", "h2", "image_embeds", "none", 768, preprocess={"b": 2, "a": "1"}).spec_id()
    )
    with pytest.raises(ValueError, match="modality"):
        EncoderSpec("video", "clip", "h", "x", "none", 8)
    with pytest.raises(ValueError, match="dim"):
        EncoderSpec("face", "clip", "h", "x", "none", 0)


def test_hash_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    first = hash_weights(tmp_path)
    assert len(first) == 16 and first == hash_weights(tmp_path)
    (tmp_path / "config.json").write_text('{"changed": 1}')  # not a weight file
    assert hash_weights(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"other")
    assert hash_weights(tmp_path) != first
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weight files"):
        hash_weights(tmp_path / "empty")


def test_round_trip_and_failures(store):
    names = [f"s{i:02d}" for i in range(10)]
    summary = store.write_part(
        [FACE, AUDIO], make_batch(names[:6], failed={"s03"}) | {"video": np.array(["v.mp4"] * 6)}
    )
    assert list(summary["name"]) == names[:6] and summary["status"][3] == "failed"
    store.write_part([FACE, AUDIO], make_batch(names[6:]))

    got = store.read(["face", "audio"], dtype=np.float32)
    ok = [n for n in names if n != "s03"]
    assert list(got["name"]) == ok
    assert got["face"].dtype == np.float32 and got["face"].shape == (9, 8, 16) and got["audio"].shape == (9, 8, 12)
    for i, n in enumerate(ok):
        np.testing.assert_allclose(got["face"][i], features_of(n, FACE), atol=2e-3, rtol=1e-3)
        np.testing.assert_allclose(got["audio"][i], features_of(n, AUDIO), atol=2e-3, rtol=1e-3)
    assert store.read([FACE])["face"].dtype == np.float16
    assert list(store.read("audio", names=["s09", "s03", "nope", "s00"])["name"]) == ["s00", "s09"]

    assert store.failed([FACE, AUDIO]) == {"s03": "decode: corrupt video /corpus/video/s03.mp4"}
    assert store.done_names([FACE, AUDIO]) == set(ok)
    df = store.samples()
    assert list(df["name"]) == names and df.set_index("name").loc["s03", "status"] == "failed"
    assert df.set_index("name").loc["s01", "subtitle"] == "subtitle of s01"
    assert "video" in df.columns


def test_bad_batches_are_refused_or_recorded(store):
    batch = make_batch(["a", "b"])
    batch["face"] = batch["face"][:, :4]
    with pytest.raises(ValueError, match="'face' has shape"):
        store.write_part([FACE, AUDIO], batch)
    with pytest.raises(ValueError, match="repeated sample names"):
        store.write_part([FACE], make_batch(["a", "a"]))
    with pytest.raises(ValueError, match="no 'audio' column"):
        store.write_part([FACE, AUDIO], {k: v for k, v in make_batch(["a"]).items() if k != "audio"})
    batch = make_batch(["a", "b"])
    batch["face"][1, 0, 0] = 1e6  # overflows fp16
    summary = store.write_part([FACE, AUDIO], batch)
    assert list(summary["status"]) == ["ok", "failed"] and "non-finite face" in summary["error"][1]
    assert store.done_names([FACE, AUDIO]) == {"a"} and "b" in store.failed([AUDIO])


class Killed(Exception):
    pass


def test_uncommitted_part_is_invisible_then_overwritten(tmp_path, monkeypatch):
    store = FeatureStore(str(tmp_path / "store.zarr"))
    names = ["k0", "k1", "k2"]
    calls = []

    def dying_time_ns():  # the samples part commits, the writer dies before committing the face part
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return 10**18 + len(calls)

    monkeypatch.setattr("features.store.time", types.SimpleNamespace(time_ns=dying_time_ns))
    with pytest.raises(Killed):
        store.write_part([FACE, AUDIO], make_batch(names))
    monkeypatch.undo()
    face_parts = tmp_path / "store.zarr" / feature_group(FACE) / "parts"
    pid = part_id_for(names, [FACE.spec_id(), AUDIO.spec_id()])
    assert (face_parts / pid / "values").is_dir()  # values written, commit flag not
    assert store.done_names([FACE, AUDIO]) == set() and store.done_names([FACE]) == set()
    assert store.read([FACE])["name"].size == 0
    assert store.pending(names, [FACE, AUDIO]) == names
    assert store.inspect()["groups"][-1]["uncommitted_parts"] == 1

    store.write_part([FACE, AUDIO], make_batch(names))  # the resumed run retries the same batch
    assert sorted(p.name for p in face_parts.iterdir() if p.is_dir()) == [pid]
    assert store.done_names([FACE, AUDIO]) == set(names)
    assert list(store.samples()["name"]) == names  # the samples part was rewritten, not duplicated

    # an orphan from a batch the resumed run composed differently: vacuum removes it
    store._write_arrays(
        f"{feature_group(FACE)}/parts/orphan", {"values": np.ones((1, 8, 16), np.float16)}, {"committed": False}
    )
    assert store.vacuum() == {"uncommitted": 1, "superseded": 0}
    assert not (face_parts / "orphan").exists() and store.done_names([FACE, AUDIO]) == set(names)


def test_partial_files_of_a_killed_write_are_not_groups_or_parts(store):
    """kill -9 during zarr's atomic write leaves ``zarr.<hex>.partial`` files: they are no group, part or array."""
    store.write_part([FACE, AUDIO], make_batch(["k0", "k1"]))
    for folder in ("features", f"{feature_group(FACE)}".rsplit("/", 1)[0], feature_group(FACE),
                   f"{feature_group(FACE)}/parts", SAMPLES):
        with store.fs.open(f"{store._abs(folder)}/zarr.{uuid.uuid4().hex}.partial", "wb") as f:
            f.write(b"{")
    assert sorted(store.groups()) == sorted([SAMPLES, feature_group(FACE), feature_group(AUDIO)])
    assert store.done_names([FACE, AUDIO]) == {"k0", "k1"}
    assert store.read([FACE, AUDIO])["name"].tolist() == ["k0", "k1"]
    assert store.vacuum() == {"uncommitted": 0, "superseded": 0}


def test_retry_of_failed_sample_replaces_it(store):
    store.write_part([FACE, AUDIO], make_batch(["r0", "r1", "r2"], failed={"r1"}))
    assert store.pending(["r0", "r1", "r2", "r3"], [FACE, AUDIO]) == ["r3"]
    assert store.pending(["r0", "r1", "r2", "r3"], [FACE, AUDIO], retry_failed=True) == ["r1", "r3"]
    store.write_part([FACE, AUDIO], make_batch(["r1", "r3"], salt=1))
    got = store.read([FACE, AUDIO], dtype=np.float32)
    assert list(got["name"]) == ["r0", "r1", "r2", "r3"]
    np.testing.assert_allclose(got["face"][1], features_of("r1", FACE, salt=1), atol=2e-3, rtol=1e-3)
    assert store.failed([FACE, AUDIO]) == {}
    assert list(store.samples()["name"]) == ["r0", "r1", "r2", "r3"]
    assert store.pending(["r0", "r1", "r2", "r3"], [FACE, AUDIO], retry_failed=True) == []  # finished: no-op

    # the same batch again (e.g. a forced rewrite) gets a new generation, never clobbers a committed part
    store.write_part([FACE, AUDIO], make_batch(["r1", "r3"], salt=2))
    np.testing.assert_allclose(
        store.read([FACE], names=["r1"], dtype=np.float32)["face"][0],
        features_of("r1", FACE, salt=2),
        atol=2e-3,
        rtol=1e-3,
    )
    assert store.vacuum(superseded=True)["superseded"] == 1 * 3  # the salt=1 part in samples, face and audio
    assert len(store.read([FACE, AUDIO])["name"]) == 4


def test_second_encoder_spec_beside_the_first(tmp_path):
    store = FeatureStore(str(tmp_path / "store.zarr"))
    names = ["e0", "e1", "e2"]
    store.write_part([FACE, AUDIO], make_batch(names))
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "store.zarr" / feature_group(FACE)).rglob("*")}
    face2 = EncoderSpec(
        "face", "clip:tiny", "cccc", "image_embeds", "none", 24, preprocess={"image_size": 224, "faces": "opencv"}
    )
    store.write_part([face2], {"name": np.array(names), "face": np.ones((3, 8, 24), np.float32)})

    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "store.zarr" / feature_group(FACE)).rglob("*")} == first
    with pytest.raises(StoreError, match="ambiguous"):
        store.read(["face"])
    old = store.read([FACE, AUDIO], dtype=np.float32)
    np.testing.assert_allclose(old["face"][0], features_of("e0", FACE), atol=2e-3, rtol=1e-3)
    new = store.read([f"face/{face2.spec_id()}"])
    assert new["face"].shape == (3, 8, 24) and (new["face"] == 1).all()
    assert store.done_names([face2, AUDIO]) == set(names)
    assert {s.spec_id() for s in store.specs("face")} == {FACE.spec_id(), face2.spec_id()}
    with pytest.raises(StoreError, match="no feature group"):
        store.read(["frame"])


WRITER = """
import sys, time, numpy as np
sys.path.insert(0, sys.argv[3])
from tests.features.test_store import FACE, AUDIO, make_batch
from features.store import FeatureStore
store = FeatureStore(sys.argv[1])
w = int(sys.argv[2])
time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # start together, after the imports
for part in range(4):
    names = [f"w{w}-p{part}-{i}" for i in range(6)]
    store.write_part([FACE, AUDIO], make_batch(names, failed={names[0]} if part == 0 else ()))
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "store.zarr")
    start_at = str(time.time() + 3.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, path, str(w), str(REPO), start_at],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = FeatureStore(path)
    expected = {f"w{w}-p{part}-{i}" for w in range(3) for part in range(4) for i in range(6)}
    failed = {f"w{w}-p0-0" for w in range(3)}
    assert store.done_names([FACE, AUDIO]) == expected - failed
    assert set(store.failed([FACE, AUDIO])) == failed
    got = store.read([FACE, AUDIO], dtype=np.float32)
    assert len(got["name"]) == len(expected) - 3 == len(set(got["name"]))
    for i in range(0, len(got["name"]), 7):
        np.testing.assert_allclose(got["audio"][i], features_of(got["name"][i], AUDIO), atol=2e-3, rtol=1e-3)
    assert store.specs("face") == [FACE] and len(store.samples()) == len(expected)


def test_inspect_and_cli(tmp_path, capsys):
    from affectflow.cli import main

    store = FeatureStore(str(tmp_path / "store.zarr"))
    store.write_part([FACE, AUDIO], make_batch(["i0", "i1", "i2", "i3"], failed={"i2"}))
    assert main(["store", "inspect", store.path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == {"total": 4, "ok": 3, "failed": 1}
    assert report["failures"]["by_stage"] == {"decode": 1}
    assert report["bytes"] > 0
    groups = {g["group"]: g for g in report["groups"]}
    face = groups[feature_group(FACE)]
    assert face["spec"] == FACE.to_dict() and face["arrays"]["values"] == {"shape": [4, 8, 16], "dtype": "float16"}
    assert groups[SAMPLES]["ok"] == 3 and face["failed"] == 1

    assert main(["store", "inspect", store.path]) == 0
    text = capsys.readouterr().out
    assert "3 ok, 1 failed" in text and FACE.spec_id() in text and "clip:tiny" in text and "decode: 1" in text
    assert (
        main(["store", "compact", store.path, "--part-size", "8"]) == 0 and "wrote 0 parts" in capsys.readouterr().out
    )
    assert main(["store", "inspect", str(tmp_path / "nowhere")]) == 2
    assert "not a feature store" in capsys.readouterr().err


def test_s3_store(s3_server):
    """The same protocol through s3fs against a local S3 (moto): listing must see other writers' parts."""
    import s3fs

    opts = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    s3fs.S3FileSystem(**opts).mkdir("feature-bucket")
    path = "s3://feature-bucket/store.zarr"
    writer, reader = FeatureStore(path, opts), FeatureStore(path, opts)
    writer.write_part([FACE, AUDIO], make_batch(["a", "b", "c"], failed={"b"}))
    assert reader.done_names([FACE, AUDIO]) == {"a", "c"}
    writer.write_part([FACE, AUDIO], make_batch(["b", "d"]))
    got = reader.read(["face", "audio"], dtype=np.float32)
    assert list(got["name"]) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(got["face"][3], features_of("d", FACE), atol=2e-3, rtol=1e-3)
    assert reader.inspect()["samples"] == {"total": 4, "ok": 4, "failed": 0}


def test_compact_merges_small_parts(store):
    for start in range(0, 12, 3):
        names = [f"c{i:02d}" for i in range(start, start + 3)]
        store.write_part([FACE, AUDIO], make_batch(names, failed={"c04"}) | {"video": np.array(["v"] * 3)})
    store.write_part([FACE, AUDIO], make_batch(["c01"], salt=1))  # a retry: its newest record must survive
    before = store.read([FACE, AUDIO])
    samples_before = store.samples()
    # samples: the retry lacks the "video" column, so it stays in a part of its own (not stored != "")
    assert store.compact(part_size=5) == {"written": 10, "removed": 15}
    after = store.read([FACE, AUDIO])
    assert list(after["name"]) == list(before["name"]) and np.array_equal(after["face"], before["face"])
    assert np.array_equal(after["audio"], before["audio"])
    assert store.failed([FACE, AUDIO]) == {"c04": "decode: corrupt video /corpus/video/c04.mp4"}
    cols = ["name", "subtitle", "status", "error"]  # a column the retry's part lacked stays "not stored" (None)
    assert store.samples()[cols].equals(samples_before[cols])
    assert store.samples()["video"].tolist()[:3] == ["v", None, "v"]
    assert [g["parts"] for g in store.inspect()["groups"]] == [4, 3, 3]
    assert store.compact(part_size=5) == {"written": 0, "removed": 0}


def test_inspect_groups_failures_by_kind_of_every_stage(tmp_path, capsys):
    """Failure texts are ``stage/kind: message``; inspect groups by the whole kind, and by stage."""
    from affectflow.cli import main
    from pipelines.errors import SampleError

    store = FeatureStore(str(tmp_path / "store.zarr"))
    names = ["k0", "k1", "k2", "k3", "k4"]
    batch = make_batch(names, failed={"k0", "k1", "k2", "k3"})
    batch["error"] = np.array([
        SampleError("video/missing", "/corpus/video/k0.mp4 does not exist").record(),
        SampleError("video/missing", "/corpus/video/k1.mp4 does not exist").record(),
        SampleError("audio/unreadable", "/corpus/audio/k2.wav: not a wav file").record(),
        "manifest/missing-file: subtitle.csv names 'k3' but /corpus/video/k3.mp4 does not exist",
        "",
    ], dtype=object)
    store.write_part([FACE, AUDIO], batch)
    report = store.inspect()
    assert report["failures"]["by_kind"] == {"video/missing": 2, "audio/unreadable": 1, "manifest/missing-file": 1}
    assert report["failures"]["by_stage"] == {"video": 2, "audio": 1, "manifest": 1}
    assert main(["store", "inspect", store.path]) == 0
    text = capsys.readouterr().out
    assert "failures by kind:" in text and "  video/missing: 2" in text and "  audio/unreadable: 1" in text


def test_tidying_a_path_without_a_store_is_an_error(tmp_path, capsys):
    from affectflow.cli import main

    (tmp_path / "plain").mkdir()
    for path in (tmp_path / "missing", tmp_path / "plain"):
        for action in (["vacuum"], ["compact"]):
            assert main(["store", *action, str(path)]) == 2
            assert f"{path} is not a feature store" in capsys.readouterr().err
