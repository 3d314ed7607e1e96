"""Single-video inference in-process: with and without the wav, and clear errors for bad files."""

from __future__ import annotations

import pytest

from core.config import load_config
from inference.infer import InferRequest, infer

NAME = "sample_00000002"


def config(*overrides: str):
    return load_config(None, ["label.max_new_tokens=8", *overrides])


def test_infer_with_and_without_the_wav(synth_corpus, models_dir, tiny_checkpoint, one_thread):
    video, wav = synth_corpus / "video" / f"{NAME}.mp4", synth_corpus / "audio" / f"{NAME}.wav"
    with_wav = infer(InferRequest(video, wav, "I am fine.", str(tiny_checkpoint), config("label.task=both"),
                                  models=models_dir))
    assert set(with_wav.texts) == {"ov", "description"} and all(with_wav.texts.values())
    assert with_wav.subtitle_source == "given" and with_wav.model_uri == str(tiny_checkpoint.resolve())
    from_track = infer(InferRequest(video, None, None, str(tiny_checkpoint), config(), models=models_dir))
    assert from_track.subtitle_source == "none" and from_track.texts["ov"]
    assert "[ov]" in from_track.format()


def test_missing_and_unreadable_files(synth_corpus, models_dir, tiny_checkpoint, tmp_path, capsys):
    from affectflow.cli import main
    from core.errors import InputError

    with pytest.raises(FileNotFoundError, match="nope.mp4 does not exist"):
        infer(InferRequest(tmp_path / "nope.mp4", model=str(tiny_checkpoint), models=models_dir))
    video = synth_corpus / "video" / f"{NAME}.mp4"
    with pytest.raises(FileNotFoundError, match="audio file .*nope.wav does not exist"):
        infer(InferRequest(video, tmp_path / "nope.wav", model=str(tiny_checkpoint), models=models_dir))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(video.read_bytes()[:800])
    with pytest.raises(InputError, match="broken.mp4"):
        infer(InferRequest(broken, model=str(tiny_checkpoint), models=models_dir))
    assert main(["infer", str(tmp_path / "gone.mp4"), "--model", str(tiny_checkpoint)]) == 2
    assert "gone.mp4 does not exist" in capsys.readouterr().err


def test_infer_asks_any_question_and_decodes_as_the_release(synth_corpus, models_dir, tiny_checkpoint, capsys,
                                                            one_thread):
    from affectflow.cli import main
    from modeling.prompt import question_for

    video = synth_corpus / "video" / f"{NAME}.mp4"
    asks = ["label.max_new_tokens=6", "label.labels=happy,sad,angry"]
    named = infer(InferRequest(video, None, "I am fine.", str(tiny_checkpoint),
                               config(*asks, "label.task=sentiment,closed"), models=models_dir))
    assert set(named.texts) == {"sentiment", "closed"}
    assert named.questions["closed"] == question_for("closed", ["happy", "sad", "angry"])
    own = infer(InferRequest(video, None, "I am fine.", str(tiny_checkpoint),
                             config(*asks, "label.question=Is the person tired?"), models=models_dir))
    assert list(own.texts) == ["question"] and own.questions["question"] == "Is the person tired?"
    assert "[question question] Is the person tired?" in own.format()

    args = ["infer", str(video), "--model", str(tiny_checkpoint), "--models", str(models_dir), "--subtitle", "hi",
            "--decoding", "released", "--max-new-tokens", "8", "--seed", "5", "--json"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0 and capsys.readouterr().out == first  # seeded: a rerun repeats
    assert main([*args[:-3], "--seed", "6", "--json"]) == 0 and capsys.readouterr().out != first


def test_infer_through_the_static_cache(synth_corpus, models_dir, tiny_checkpoint, one_thread):
    """label.backend=static: the same answers as the default (hf on the CPU); an answer budget over
    label.cache_tokens is refused, naming the setting."""
    from core.errors import InputError

    video = synth_corpus / "video" / f"{NAME}.mp4"
    hf = infer(InferRequest(video, None, "I am fine.", str(tiny_checkpoint), config("label.task=both"),
                            models=models_dir))
    static = infer(InferRequest(video, None, "I am fine.", str(tiny_checkpoint),
                                config("label.task=both", "label.backend=static"), models=models_dir))
    assert static.texts == hf.texts and all(static.texts.values())
    with pytest.raises(InputError, match="label.cache_tokens=40"):
        infer(InferRequest(video, None, "I am fine.", str(tiny_checkpoint),
                           config("label.backend=static", "label.cache_tokens=40"), models=models_dir))
