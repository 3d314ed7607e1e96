"""Single-video inference in this process, no Ray: media -> features -> generated text.

The same stages and encoders as preprocessing (``pipelines``), called directly: 8 frames,
faces (a Haar detector on the frames by default; ``face_npy`` for an OpenFace stack), audio
from the wav or else from the video's own track, the subtitle as given or transcribed by the
local Whisper checkpoint when ASR is on, CLIP + HuBERT, then batched generation for the tasks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Config, load_config
from core.console import echo
from core.errors import InputError, MissingFileError
from core.paths import absolute

# A face model on a video without a face stack sees Haar crops of frames, not the OpenFace faces it was trained
# on; the release's single-video script passes no face stack (inference_sample.py line 193, face_npy = None),
# so only its frame model runs on a raw video.
FACE_MODEL_ON_FRAMES = ("warning: {model} is a face model and no face stack was given (--face-npy): its faces are "
                        "cut from the frames here, input it never saw; for raw videos the release uses its frame "
                        "model: import the frame checkpoint (affectflow import-released ... --visual frame) and run "
                        "that")


@dataclass(frozen=True)
class InferRequest:
    """One video to run the model on, as the command built it from the config and its flags.

    ``cfg`` says what to ask and how to decode (``label.*``), the ``seed``, the MLflow URI
    (``mlflow.*``) and the media settings (``preprocess.*``; ``preprocess.asr`` transcribes a
    video given without a subtitle); the fields say the rest.
    """

    video: Path
    audio: Path | None = None  # a wav; None: the video's own track
    subtitle: str | None = None  # what is said; None: none, or ASR with preprocess.asr
    model: str | Path = "models:/affectgpt@latest"  # a checkpoint or run folder, or an MLflow model URI
    cfg: Config = field(default_factory=load_config)
    models: Path | None = None  # encoders (clip/, hubert/[, whisper/]); None: as `plan_encoders`
    face_npy: Path | None = None  # an OpenFace face stack; None: faces detected in the frames
    llm_path: Path | None = None  # the base LLM of a model logged without it

    def __post_init__(self) -> None:
        for name in ("video", "audio", "models", "face_npy", "llm_path"):
            object.__setattr__(self, name, absolute(getattr(self, name)))


@dataclass
class InferResult:
    """The outputs for one video: per task, the text and its parsed labels (None for free text)."""

    video: str
    subtitle: str
    subtitle_source: str  # "given", "asr" or "none"
    model_uri: str
    model_version: str
    texts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, list[str] | None] = field(default_factory=dict)
    questions: dict[str, str] = field(default_factory=dict)
    subtitle_cut: int = 0  # subtitle tokens dropped to fit the prompt budget

    def format(self) -> str:
        cut = f" (shortened by {self.subtitle_cut} tokens to fit the prompt)" if self.subtitle_cut else ""
        lines = [f"video: {self.video}", f"subtitle ({self.subtitle_source}): {self.subtitle!r}{cut}",
                 f"model: {self.model_uri}" + (f" (version {self.model_version})" if self.model_version else "")]
        for task, text in self.texts.items():
            if task not in ("ov", "description"):
                lines.append(f"[{task} question] {self.questions.get(task, '')}")
            lines.append(f"[{task}] {text}")
            if self.labels.get(task) is not None:
                lines.append(f"[{task} labels] {', '.join(self.labels[task]) or '(none)'}")
        return "\n".join(lines)


def _check_file(path: str | Path | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"{what} {p} does not exist")
    if not p.is_file():
        raise InputError(f"{what} {p} is not a file")
    if p.stat().st_size == 0:
        raise InputError(f"{what} {p} is empty (0 bytes)")
    return p


def infer(request: InferRequest) -> InferResult:
    """Run the model on one video; ``label.task`` is a named task, ``both`` or a comma list,
    ``label.question`` your own (see ``inference.label_stage.resolve_asks``); decoding as ``label.*``
    says. Raises ``InputError`` / ``MissingFileError`` naming the file for missing or unreadable media,
    or for a prompt that cannot fit; ``ModelRefError`` for a model that cannot be resolved."""
    import numpy as np
    import torch

    from core.tracking import tracking_uri as resolve_uri
    from inference.label_stage import resolve_asks
    from inference.labeling import plan_encoders
    from modeling.checkpoint import read_spec
    from modeling.generate import clean_output, generate_raw
    from modeling.sampling import DecodingSettings, sample_seed
    from pipelines.encoders import ClipEncoder, HubertEncoder, WhisperASR
    from pipelines.stages import OK, DecodeStage, stack_samples
    from registry.resolve import load_model, resolve_model
    from scoring.parse import parse_template

    cfg = request.cfg
    video_path = _check_file(request.video, "video")
    audio_path = _check_file(request.audio, "audio file")
    face_path = _check_file(request.face_npy, "face stack")
    lc = cfg.label
    asks = resolve_asks(lc.task, lc.question, lc.labels, lc.valence_range)
    tasks = [t for t, _ in asks]
    given = (request.subtitle or "").strip()
    want_asr = cfg.preprocess.asr and not given
    p = dataclasses.replace(cfg.preprocess, layout="folder", asr=bool(want_asr),
                            faces="openface" if face_path else ("opencv" if cfg.preprocess.faces == "openface"
                                                                else cfg.preprocess.faces))
    resolved = resolve_model(request.model, tracking_uri=resolve_uri(cfg.mlflow.tracking_uri),
                             llm_path=request.llm_path, check_timeout=cfg.mlflow.check_timeout_s)
    spec = read_spec(resolved.checkpoint)
    if spec.get("visual_stream", "face") == "face" and face_path is None:
        echo(FACE_MODEL_ON_FRAMES.format(model=request.model), err=True)
    # plan() refuses openface stacks for the folder layout: check encoders with the detector, then swap.
    plan_ = plan_encoders(dataclasses.replace(cfg, preprocess=dataclasses.replace(p, faces="opencv")
                                               if face_path else p), request.models, spec)
    row = {"name": video_path.stem, "video": str(video_path), "audio": str(audio_path or ""),
           "face": str(face_path or ""), "subtitle": given, "error": ""}
    sample = DecodeStage(p).decode(row)
    if sample.status != OK:
        raise InputError(f"cannot use {video_path}: {sample.error}")
    batch = stack_samples([sample], with_waveform=p.asr)
    enc = dict(device=p.device, dtype=p.dtype, torch_threads=None)
    batch = ClipEncoder(plan_.clip, **enc)(batch)
    batch = HubertEncoder(plan_.hubert, **enc)(batch)
    source = "given" if given else "none"
    if p.asr and plan_.whisper is not None:
        batch = WhisperASR(plan_.whisper, **enc)(batch)
        source = "asr" if str(batch["subtitle"][0]) else "none"
    text = str(batch["subtitle"][0])
    net, resolved = load_model(resolved, device=cfg.label.device, dtype=cfg.label.dtype)
    gen = DecodingSettings.from_config(lc).resolve(net.llm, next(net.fusion.parameters()).device, single=True)
    visual = torch.as_tensor(np.asarray(batch[spec.get("visual_stream", "face")], np.float32))
    audio_feats = torch.as_tensor(np.asarray(batch["audio"], np.float32))
    n = len(tasks)
    raws, decoded = generate_raw(net, visual.expand(n, -1, -1), audio_feats.expand(n, -1, -1), [text] * n, tasks,
                                 gen, [sample_seed(cfg.seed, video_path.stem, t) for t in tasks],
                                 questions=[q for _, q in asks])
    if any(d.finish == "prompt-too-long" for d in decoded):
        raise InputError(f"the question does not fit the {gen.max_prompt_tokens}-token prompt even without the "
                         "subtitle: ask a shorter one or raise label.max_prompt_tokens")
    if any(d.finish == "cache-too-long" for d in decoded):
        raise InputError(f"the prompt and the answer budget exceed label.cache_tokens={gen.cache_tokens}: raise it, "
                         "or 0 for the prompt budget + the answer budget")
    result = InferResult(str(video_path), text, source, resolved.model_uri, resolved.version,
                         questions=dict(asks), subtitle_cut=max(d.subtitle_cut for d in decoded))
    for t, raw in zip(tasks, raws):
        result.texts[t] = clean_output(raw)
        result.labels[t] = parse_template(result.texts[t])
    return result
