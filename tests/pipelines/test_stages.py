"""Stage functions and stage classes without Ray: frames, faces, audio, encoders, bad input as data."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.audio import clip_audio, load_video_audio, load_wav
from pipelines.errors import SampleError
from pipelines.faces import HaarFaces, detect_faces, haar_available, load_face_stack, sample_faces
from pipelines.frames import decode_frames, uniform_indices
from pipelines.manifest import read_mer2025
from pipelines.stages import DecodeStage
from tests.fixtures.pipeline import BAD_CASES, GOOD

# The shared fixtures (session-scoped: built once however many modules use them).


def test_uniform_indices_follow_design_rule():
    assert uniform_indices(66).tolist() == [0, 8, 16, 24, 33, 41, 49, 57]
    assert uniform_indices(8).tolist() == list(range(8))
    assert uniform_indices(3).tolist() == [0, 1, 2, 2, 2, 2, 2, 2]
    assert uniform_indices(1).tolist() == [0] * 8
    with pytest.raises(ValueError):
        uniform_indices(0)


def test_decode_frames_path_and_bytes_agree_with_decord(synth_corpus):
    import decord

    path = synth_corpus / "video" / "sample_00000000.mp4"
    frames = decode_frames(path)
    assert frames.shape == (8, 224, 224, 3) and frames.dtype == np.uint8
    vr = decord.VideoReader(str(path), width=224, height=224)
    np.testing.assert_array_equal(frames, vr.get_batch(list(uniform_indices(len(vr)))).asnumpy())
    np.testing.assert_array_equal(decode_frames(path.read_bytes(), label="x.mp4"), frames)


def test_decode_frames_bad_files_name_the_file(tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"\x00junk" * 100)
    for name in ("zero.mp4", "junk.mp4", "absent.mp4"):
        with pytest.raises(SampleError) as err:
            decode_frames(tmp_path / name)
        assert name in err.value.record() and err.value.kind.startswith("video/")


def test_clip_audio_boundaries():
    """The release cuts its 8 audio clips where pytorchvideo 0.1.5 puts them (its environment.yml:250):
    ``ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=8)`` (my_affectgpt/models/ImageBind/
    data.py:180-206) starts clip i at ``Fraction(max(D - 2, 0)) / 8 * i`` seconds (clip_sampling.py,
    ``uniform_clip = Fraction(max_possible_clip_start, self._clips_per_video)``) and slices samples
    ``int(start * 16000)`` to ``int(end * 16000)``. Expected starts worked out by hand below."""
    sr = 16000
    # 3.5 s (56,000 samples): max start 1.5 s, step 1.5/8 = 3/16 s = 3,000 samples.
    y = np.arange(56000, dtype=np.float32)
    clips = clip_audio(y, sr)
    assert clips.shape == (8, 32000)
    for i, start in enumerate([0, 3000, 6000, 9000, 12000, 15000, 18000, 21000]):
        np.testing.assert_array_equal(clips[i], y[start:start + 32000])
    # 32,936 samples: D = 2.0585 s, but the float 2.0585 - 2 is 0.058499999999999996... (just under
    # 0.0585), so 16000 * i * (D - 2) / 8 is just under 117 * i and int() gives 117 * i - 1 for i >= 1.
    y = np.arange(32936, dtype=np.float32)
    clips = clip_audio(y, sr)
    for i, start in enumerate([0, 116, 233, 350, 467, 584, 701, 818]):
        np.testing.assert_array_equal(clips[i], y[start:start + 32000])
    short = clip_audio(np.ones(sr // 2, np.float32), sr)  # 0.5 s: zero-padded to 2 s, every clip the same
    assert np.all(short[:, : sr // 2] == 1) and np.all(short[:, sr // 2:] == 0)


def test_load_wav_matches_librosa_and_video_track_agrees(synth_corpus):
    import librosa

    # Sample 3 is 44.1 kHz stereo in the synthetic corpus: both the downmix and the resample run.
    wav = synth_corpus / "audio" / "sample_00000003.wav"
    ours = load_wav(wav)
    ref, _ = librosa.load(str(wav), sr=16000, mono=True)
    assert ours.dtype == np.float32 and len(ours) == len(ref)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    np.testing.assert_allclose(load_wav(wav.read_bytes()), ours, atol=1e-6)
    track = load_video_audio(synth_corpus / "video" / "sample_00000003.mp4")
    n = min(len(track), len(ours))
    assert abs(len(track) - len(ours)) < 0.1 * 16000  # AAC priming/padding only
    # AAC is lossy and shifted by its priming samples: compare loudness, not samples.
    assert abs(np.sqrt(np.mean(track[:n] ** 2)) / np.sqrt(np.mean(ours[:n] ** 2)) - 1) < 0.1


@pytest.mark.parametrize("sr,n", [(44100, 44100 * 3 + 7), (48000, 96001), (22050, 1), (8000, 12345), (16000, 999)])
def test_resample_equals_librosa_soxr_hq(sr, n):
    import librosa

    from pipelines.audio import _resample

    y = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    ref = librosa.resample(y, orig_sr=sr, target_sr=16000, res_type="soxr_hq")
    ours = _resample(y, sr, 16000)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


def test_openface_faces_keep_bgr_and_resize(synth_corpus):
    import cv2

    stack = load_face_stack(synth_corpus / "openface_face" / "sample_00000000" / "sample_00000000.npy")
    faces = sample_faces(stack)
    assert faces.shape == (8, 224, 224, 3)
    idx = uniform_indices(len(stack))
    np.testing.assert_array_equal(faces[3], cv2.resize(stack[idx[3]], (224, 224), interpolation=cv2.INTER_LINEAR))


def test_haar_faces_fallback_is_counted():
    assert haar_available() == ""  # opencv-python-headless<5 (pyproject.toml) bundles the cascades
    rng = np.random.default_rng(0)
    blank = np.zeros((2, 224, 224, 3), np.uint8)
    noise = rng.integers(0, 255, (1, 224, 224, 3), dtype=np.uint8)
    crops, fallbacks = detect_faces(np.concatenate([blank, noise]), HaarFaces())
    assert crops.shape == (3, 224, 224, 3) and fallbacks == 3
    np.testing.assert_array_equal(crops[2], noise[0][..., ::-1])  # whole frame, flipped to BGR


def test_haar_finds_the_synthetic_face():
    from synth.corpus import render_frames

    frames = render_frames("happy", 4, np.random.default_rng(0))
    import cv2

    frames = np.stack([cv2.resize(f, (224, 224)) for f in frames])
    _, fallbacks = detect_faces(frames, HaarFaces())
    assert fallbacks < 4, "the Haar cascade found no face in any synthetic frame"


def test_clip_pixel_values_equal_the_processor(models_dir):
    from transformers import CLIPImageProcessorPil

    from pipelines.encoders import ClipEncoder

    enc = ClipEncoder(models_dir / "clip", device="cpu")
    imgs = np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3), dtype=np.uint8)
    ref = CLIPImageProcessorPil.from_pretrained(str(models_dir / "clip"))(images=list(imgs), return_tensors="pt")
    np.testing.assert_allclose(enc.pixel_values(imgs).numpy(), ref["pixel_values"].numpy(), atol=1e-5)
    other = np.random.default_rng(1).integers(0, 255, (2, 112, 150, 3), dtype=np.uint8)  # not at crop size
    ref = CLIPImageProcessorPil.from_pretrained(str(models_dir / "clip"))(images=list(other), return_tensors="pt")
    np.testing.assert_allclose(enc.pixel_values(other).numpy(), ref["pixel_values"].numpy(), atol=1e-5)


def test_hubert_normalisation_is_joint_over_clips_like_the_extractor(models_dir):
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    from pipelines.encoders import hubert_inputs

    clips = np.random.default_rng(0).normal(0, 1, (8, 32000)).astype(np.float32) * np.arange(1, 9)[:, None]
    ext = Wav2Vec2FeatureExtractor.from_pretrained(str(models_dir / "hubert"))
    # As the released code: the sample's [8, T] clips handed over as one tensor -> one mean/var.
    ref = ext(torch.from_numpy(clips), sampling_rate=16000, return_tensors="pt").input_values[0]
    ours = hubert_inputs(torch.from_numpy(clips)[None], True)[0]
    np.testing.assert_allclose(ours.numpy(), np.asarray(ref).reshape(8, 32000), atol=1e-4)
    assert abs(float(ours[0].std()) - float(ours[7].std())) > 0.5  # not per-clip


def test_decode_stage_records_every_bad_input(bad_corpus):
    rows = {r.name: r.to_dict() for r in read_mer2025(bad_corpus)}
    stage = DecodeStage()
    out = {name: stage.decode(row) for name, row in rows.items()}
    for name in GOOD:
        assert out[name].status == "ok", out[name].error
        assert out[name].frames.any() and out[name].clips.any()
    for name, (kind, word) in BAD_CASES.items():
        s = out[name]
        assert s.status == "failed" and s.error.startswith(kind + ":"), (name, s.error)
        assert word in s.error, (name, s.error)
        assert not s.frames.any()
    batch = stage(
        {
            k: np.array([r[k] for r in rows.values()] + [None], dtype=object)[:-1]
            for k in ("name", "video", "audio", "face", "subtitle", "error")
        }
    )
    assert batch["frames"].shape == (len(rows), 8, 224, 224, 3)
    assert sorted(batch["name"][batch["status"] == "ok"]) == sorted(GOOD)


def _tone(n: int, sr: int, hz: float, amp: float) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / sr)).astype(np.float32)


def test_channels_as_the_release_reads_them(tmp_path):
    """Two channels are averaged; any other count keeps the first (not the mean of all)."""
    import av
    import soundfile as sf

    from pipelines.audio import to_mono

    sr, n = 16000, 16000
    tone = _tone(n, sr, 440.0, 0.5)
    quad = np.stack([tone, -tone, np.zeros(n, np.float32), np.full(n, 0.25, np.float32)])
    np.testing.assert_array_equal(to_mono(quad), tone)
    np.testing.assert_array_equal(to_mono(quad[:2]), np.zeros(n, np.float32))
    np.testing.assert_array_equal(to_mono(quad[:1]), tone)

    sf.write(tmp_path / "quad.wav", quad.T, sr, subtype="FLOAT")
    np.testing.assert_allclose(load_wav(tmp_path / "quad.wav"), tone, atol=1e-6)
    sf.write(tmp_path / "stereo.wav", quad[[0, 3]].T, sr, subtype="FLOAT")
    np.testing.assert_allclose(load_wav(tmp_path / "stereo.wav"), (tone + 0.25) / 2, atol=1e-6)

    # A 5.1 AAC track in an mp4: the front-left tone alone, at its own loudness (the mean of six would be 1/6 of it).
    six = np.zeros((6, n), np.float32)
    six[0] = tone
    path = tmp_path / "surround.mp4"
    with av.open(str(path), "w", format="mp4") as box:
        stream = box.add_stream("aac", rate=sr, layout="5.1")
        frame = av.AudioFrame.from_ndarray(six, format="fltp", layout="5.1")
        frame.sample_rate, frame.pts = sr, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            box.mux(packet)
    track = load_video_audio(path)
    rms = float(np.sqrt(np.mean(track[2000:-2000] ** 2)))
    assert abs(rms / (0.5 / np.sqrt(2)) - 1) < 0.1, rms
