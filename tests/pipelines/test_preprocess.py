"""The Ray Data job end to end: stored features equal direct transformers encodings, bad input, versions, layouts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from features.store import FeatureStore
from pipelines.job import PreprocessRequest, preprocess
from tests.fixtures.pipeline import BAD_CASES, GOOD, copy_corpus, pipeline_config
from tests.pipelines.test_manifest import write_shards

NAMES = [f"sample_{i:08d}" for i in (0, 3, 5)]  # 16 kHz mono, 44.1 kHz stereo, 22.05 kHz mono

# The shared fixtures (session-scoped: built once however many modules use them).


def direct_features(corpus, models, names):
    """The same samples encoded with plain transformers calls (processor + model), no pipeline code."""
    import cv2
    import decord
    import librosa
    import torch
    from transformers import CLIPImageProcessorPil, CLIPModel, HubertModel, Wav2Vec2FeatureExtractor

    clip = CLIPModel.from_pretrained(str(models / "clip")).eval()
    proc = CLIPImageProcessorPil.from_pretrained(str(models / "clip"))
    hub = HubertModel.from_pretrained(str(models / "hubert")).eval()
    ext = Wav2Vec2FeatureExtractor.from_pretrained(str(models / "hubert"))
    out = {"frame": [], "face": [], "audio": []}
    for name in names:
        vr = decord.VideoReader(str(corpus / "video" / f"{name}.mp4"), width=224, height=224)
        n = len(vr)
        frames = vr.get_batch([i * n // 8 for i in range(8)]).asnumpy()
        stack = np.load(corpus / "openface_face" / name / f"{name}.npy")
        faces = [cv2.resize(stack[i * len(stack) // 8], (224, 224)) for i in range(8)]
        with torch.no_grad():
            for key, imgs in (("frame", list(frames)), ("face", faces)):
                pix = proc(images=imgs, return_tensors="pt")["pixel_values"]
                feats = clip.get_image_features(pixel_values=pix)
                out[key].append(getattr(feats, "pooler_output", feats).numpy())
            y, _ = librosa.load(str(corpus / "audio" / f"{name}.wav"), sr=16000)
            y = np.pad(y, (0, max(0, 32000 - len(y))))
            # The release's clip times: pytorchvideo 0.1.5 ConstantClipsPerVideoSampler(clip_duration=2,
            # clips_per_video=8), start i * Fraction(max(D - 2, 0)) / 8 (my_affectgpt/models/ImageBind/data.py:180-206).
            step = Fraction(max(len(y) / 16000 - 2, 0)) / 8
            clips = [y[int(16000 * step * i):int(16000 * (step * i + 2))] for i in range(8)]
            x = ext(torch.from_numpy(np.stack(clips)), sampling_rate=16000, return_tensors="pt").input_values
            hs = hub(torch.as_tensor(np.asarray(x)).reshape(8, -1), output_hidden_states=True).hidden_states
            out["audio"].append(torch.stack(hs[-4:]).mean(0).mean(1).numpy())
    return {k: np.stack(v) for k, v in out.items()}


def test_reference_run_stores_every_sample(reference_store):
    path, summary = reference_store
    assert summary.ok == 24 and summary.failed == 0 and summary.skipped == 0
    fs = FeatureStore(str(path))
    got = fs.read(["frame", "face", "audio"])
    assert len(got["name"]) == 24
    assert got["frame"].shape == (24, 8, 768) and got["audio"].shape == (24, 8, 64)
    assert got["frame"].dtype == np.float16
    subs = fs.samples().set_index("name")["subtitle"]
    assert subs.str.len().min() > 0


def test_stored_features_equal_direct_transformers_encoding(reference_store, synth_corpus, models_dir):
    got = FeatureStore(str(reference_store[0])).read(["frame", "face", "audio"], names=NAMES, dtype=np.float32)
    assert list(got["name"]) == NAMES
    want = direct_features(synth_corpus, models_dir, NAMES)
    for key in ("frame", "face", "audio"):
        # fp16 storage: ~1e-3 relative; the decoders and models are the same code.
        np.testing.assert_allclose(got[key], want[key], rtol=2e-3, atol=2e-3 * np.abs(want[key]).max(), err_msg=key)


def test_labels_are_stored_with_the_samples(reference_store, synth_corpus):
    """Each sample's track-2 list and track-3 description pass decode and land in the samples table."""
    from features.labels import openset_from_store, read_corpus_labels

    stored = FeatureStore(str(reference_store[0])).samples(columns=["openset", "reason"]).set_index("name")
    labels = read_corpus_labels(synth_corpus).set_index("name")
    assert sorted(stored.index) == sorted(labels.index) and len(stored) == 24
    for name, row in labels.iterrows():
        assert stored.loc[name, "openset"] == "[" + ", ".join(row["openset"]) + "]"
        assert openset_from_store(stored.loc[name, "openset"]) == row["openset"]
        assert stored.loc[name, "reason"] == row["reason"]
    assert (stored["openset"] == "[]").any()  # some neutral samples are labelled with an empty list


def test_rerun_is_a_no_op(reference_store, synth_corpus, models_dir):
    summary = preprocess(PreprocessRequest(synth_corpus, reference_store[0], pipeline_config(), models=models_dir))
    assert summary.skipped == 24 and summary.processed == 0


@pytest.mark.slow
def test_bad_inputs_are_recorded_and_the_rest_stored(ray_session, bad_corpus, models_dir, tmp_path, capsys):
    from affectflow.cli import main

    store = tmp_path / "bad.zarr"
    code = main(["preprocess", "--corpus", str(bad_corpus), "--store", str(store), "--models", str(models_dir),
                 "--set", "preprocess.batch_size=4", "--set", "preprocess.write_batch_size=4"])
    out = capsys.readouterr().out
    assert code == 1 and "exceeds --max-failure-rate" in out  # 10 of 14 failed
    assert f"ok: {len(GOOD)}" in out and "videos/s" in out
    for kind in {k for k, _ in BAD_CASES.values()}:
        assert kind in out
    fs = FeatureStore(str(store))
    specs = fs.specs()
    assert fs.done_names(specs) == set(GOOD)
    failed = fs.failed(specs)
    for name, (kind, word) in BAD_CASES.items():
        assert failed[name].startswith(kind) and word in failed[name], (name, failed.get(name))
    # Failed samples are not retried unless asked; with --retry-failed they are (and fail again).
    again = preprocess(PreprocessRequest(bad_corpus, store, pipeline_config(), models=models_dir))
    assert again.processed == 0
    # ... and the rerun's summary still tells the store's whole state, earlier failures included.
    assert (again.failed, again.state_ok, again.state_failed) == (0, len(GOOD), len(BAD_CASES))
    assert again.state_failure_rate == len(BAD_CASES) / (len(GOOD) + len(BAD_CASES))
    assert (f"store now: {len(GOOD)} ok, {len(BAD_CASES)} failed" in again.format()
            and f"{len(BAD_CASES)} failed in an earlier run and stay recorded (--retry-failed" in again.format())
    # A plain rerun of the CLI processes nothing, and still fails on the recorded failures.
    assert main(["preprocess", "--corpus", str(bad_corpus), "--store", str(store), "--models", str(models_dir)]) == 1
    out = capsys.readouterr().out
    assert "processed" in out and "exceeds --max-failure-rate" in out and "--retry-failed" in out
    again = preprocess(PreprocessRequest(bad_corpus, store, pipeline_config(), models=models_dir, retry_failed=True))
    assert again.processed == len(BAD_CASES) and again.failed == len(BAD_CASES)
    assert main(["preprocess", "--corpus", str(bad_corpus), "--store", str(tmp_path / "b2.zarr"), "--models",
                 str(models_dir), "--max-failure-rate", "0.9"]) == 0


@pytest.mark.slow
def test_second_encoder_version_beside_the_first(reference_store, synth_corpus, models_dir, models_v2, tmp_path):
    store = tmp_path / "two.zarr"
    shutil.copytree(reference_store[0], store)
    fs = FeatureStore(str(store))
    first = {s.modality: s for s in fs.specs()}
    before = fs.read(list(first.values()))
    summary = preprocess(PreprocessRequest(synth_corpus, store, pipeline_config(), models=models_v2))
    assert summary.ok == 24
    # Only the new CLIP ran: its frame and face groups are new, the audio group (same HuBERT) was skipped.
    assert sorted(s.split("/")[0] for s in summary.specs) == ["face", "frame"]
    specs = fs.specs()
    assert len(specs) == 5
    second = {s.modality: s for s in specs if s not in first.values()}
    assert second["frame"].weights_hash != first["frame"].weights_hash
    after = fs.read(list(first.values()))
    for key in ("frame", "face", "audio"):
        np.testing.assert_array_equal(after[key], before[key])
    new = fs.read([second["frame"], first["audio"]])
    assert len(new["name"]) == 24 and not np.allclose(new["frame"], before["frame"], atol=1e-2)


@pytest.mark.slow
def test_webdataset_layout_matches_mer2025(reference_store, synth_corpus, models_dir, tmp_path):
    names = [f"sample_{i:08d}" for i in range(4)]
    shards = write_shards(tmp_path / "shards", synth_corpus, names)
    store = tmp_path / "wds.zarr"
    # A pool per encoder here (the reference run fused them): the features must not depend on it.
    summary = preprocess(PreprocessRequest(shards, store, pipeline_config("preprocess.encoder_pools=separate"),
                                           layout="webdataset", models=models_dir))
    assert summary.ok == 4, summary.format()
    got = FeatureStore(str(store)).read(["frame", "face", "audio"], dtype=np.float32)
    ref = FeatureStore(str(reference_store[0])).read(["frame", "face", "audio"], names=names, dtype=np.float32)
    assert list(got["name"]) == names
    for key in ("frame", "face", "audio"):  # same bytes in, same features out (batching may differ by an ulp)
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-3, atol=1e-3, err_msg=key)
    stored = FeatureStore(str(store)).samples(columns=["openset", "reason"])
    assert list(stored["openset"]) == ["[happy]"] * 4 and list(stored["reason"]) == [""] * 4  # as the shards' json say
    again = preprocess(PreprocessRequest(shards, store, pipeline_config(), layout="webdataset", models=models_dir))
    assert again.processed == 0


def test_folder_layout_with_opencv_faces(ray_session, synth_corpus, models_dir, tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    for i in range(3):
        shutil.copy(synth_corpus / "video" / f"sample_{i:08d}.mp4", root / f"clip{i}.mp4")
    (root / "subtitles.csv").write_text("name,english\nclip0,hello\n")
    summary = preprocess(PreprocessRequest(root, tmp_path / "f.zarr", pipeline_config(), layout="folder",
                                           faces="opencv", models=models_dir))
    assert summary.ok == 3, summary.format()
    fs = FeatureStore(str(tmp_path / "f.zarr"))
    assert fs.samples().set_index("name").loc["clip0", "subtitle"] == "hello"
    assert summary.face_fallback < 3 * 8  # the cascade finds the synthetic face in some frames


@pytest.mark.slow
def test_asr_fills_missing_subtitles(ray_session, synth_corpus, models_dir, whisper_model, tmp_path):
    names = ["sample_00000000", "sample_00000001"]
    root = copy_corpus(synth_corpus, tmp_path / "c", names)
    (root / "subtitle_chieng.csv").write_text(f"name,english\n{names[0]},given\n")  # the second has none
    cfg = pipeline_config("preprocess.asr=true", f"preprocess.whisper_model={whisper_model}")
    summary = preprocess(PreprocessRequest(root, tmp_path / "asr.zarr", cfg, models=models_dir))
    assert summary.ok == 2, summary.format()
    subs = FeatureStore(str(tmp_path / "asr.zarr")).samples().set_index("name")["subtitle"]
    assert subs[names[0]] == "given" and len(subs[names[1]]) > 0


def test_source_gives_a_block_per_decode_batch(ray_session):
    """Manifest rows reach the decode stage in blocks of one batch, however long the manifest.

    A block of many batches makes a decode task assemble all their decoded media into one
    output block (~3.4 MB a sample), which at 132k rows held ~0.7 GiB more at the peak.
    """
    from pipelines.operators import source

    items = [{"name": f"s{i:05d}", "video": f"/x/s{i:05d}.mp4"} for i in range(70)]
    ds = source(items, batch_size=16)
    sizes = [len(b["name"]) for b in ds.iter_batches(batch_size=None)]  # batch_size=None: a batch per block
    assert sum(sizes) == 70 and len(sizes) == 5 and max(sizes) <= 16
    assert [r["name"] for r in ds.take_all()] == [it["name"] for it in items]


def test_local_ray_caps_gcs_task_events():
    """A local instance keeps at most ``ray.task_events_max`` task events in its GCS.

    Ray's default (100k) let the GCS grow by ~160 MiB over a 132k-row preprocessing job.
    Runs in a child process: the session's Ray is already up and `init_ray` would join it.
    """
    code = (
        "from core.config import load_config\n"
        "from core.runtime import init_ray\n"
        "import ray\n"
        "init_ray(load_config(None, ['ray.num_cpus=1', 'ray.task_events_max=1234']), log_to_driver=False)\n"
        "print('cap', ray._config.task_events_max_num_task_in_gcs())\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cap 1234" in out.stdout
