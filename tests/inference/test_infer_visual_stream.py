"""infer with a face model on a video without a face stack warns, in one line, that the release runs raw videos
with its frame model (inference_sample.py line 193 passes face_npy = None, so its face model cannot run one)."""

from __future__ import annotations

import json
import shutil

from core.config import load_config
from inference.infer import InferRequest, infer
from modeling.checkpoint import SPEC_FILE

NAME = "sample_00000002"


def test_a_face_model_on_a_raw_video_warns_and_names_the_frame_model(synth_corpus, models_dir, tiny_checkpoint,
                                                                    tmp_path, capsys, one_thread):
    video = synth_corpus / "video" / f"{NAME}.mp4"
    face_npy = synth_corpus / "openface_face" / NAME / f"{NAME}.npy"
    cfg = load_config(None, ["label.max_new_tokens=2"])
    assert infer(InferRequest(video, None, "I am fine.", str(tiny_checkpoint), cfg, models=models_dir)).texts["ov"]
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {tiny_checkpoint} is a face model and no face stack was given (--face-npy): its faces are cut "
        "from the frames here, input it never saw; for raw videos the release uses its frame model: import the "
        "frame checkpoint (affectflow import-released ... --visual frame) and run that"]

    infer(InferRequest(video, None, "I am fine.", str(tiny_checkpoint), cfg, models=models_dir, face_npy=face_npy))
    frame = shutil.copytree(tiny_checkpoint, tmp_path / "frame")  # the same weights, as a frame model
    spec = json.loads((frame / SPEC_FILE).read_text())
    (frame / SPEC_FILE).write_text(json.dumps({**spec, "visual_stream": "frame"}))
    infer(InferRequest(video, None, "I am fine.", str(frame), cfg, models=models_dir))
    assert "warning:" not in capsys.readouterr().err
