"""Import a released AffectGPT checkpoint (``checkpoint_0000NN_loss_X.pth``) into our checkpoint layout.

The released file is a ``torch.save`` of ``{"model", "optimizer", "config", "scaler", "epoch"}``;
``model`` holds only the trainable tensors at Qwen2.5-7B shapes:

- 18 fusion tensors (weight and bias of each): ``video_attention_mlp`` [1,768] and
  ``affectgpt_proj`` [3584,768] (face/frame scorer and projector), ``audio_attention_mlp``
  [1,1024], ``audio_llama_proj`` [3584,1024], ``multi_video_embs`` [1024,768],
  ``multi_audio_embs`` [1024,1024], ``attention_mlp`` [1024,2048], ``fc_att`` [2,1024],
  ``multi_llama_proj`` [3584,1024];
- 392 LoRA tensors ``llama_model.base_model.model.model.layers.{i}.{self_attn.{q,k,v,o}_proj |
  mlp.{gate,up,down}_proj}.lora_{A,B}.default.weight`` (r 16, alpha 32);
- ``image_llama_proj.{weight,bias}``: a 768->H projector the released model never uses. It is
  dropped (an unused trainable parameter also breaks data-parallel training).

``config["datasets"]["mercaptionplus"]["face_or_frame"]`` names the prompt and visual stream: only the
release's two settings are accepted (:data:`VISUAL_STREAMS`); any other names a prompt we do not build.
``config["model"]``, when the file carries it, must describe the released architecture
(:data:`RELEASED_MODEL`); the LoRA tensors must have the release's rank and targets. The optimizer and
scaler states are ignored.

The file is read with ``torch.load(weights_only=True)`` only, so a file that needs arbitrary
unpickling is refused. Every check runs before anything is written: the key set and every
shape against our model built on the meta device from the LLM folder's ``config.json`` (no
weights are loaded), so the import of a 7B checkpoint takes seconds and little memory.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.errors import InputError, MissingFileError
from core.paths import require_writable
from core.sections import ModelConfig
from modeling.checkpoint import RELEASED_FORMAT
from modeling.model import RELEASED_NAMES, AffectGPT, build_model

RELEASED_LLM_PREFIX = "llama_model."  # the released LoRA tensors; ours live under "llm."
OUR_LLM_PREFIX = "llm."
OUR_FUSION_PREFIX = "fusion."
DROPPED = ("image_llama_proj.weight", "image_llama_proj.bias")
# The release's two settings of face_or_frame, each a prompt with the multi, audio and one visual token
# (train_configs/emercoarse_highlevelfilter4_outputhybird_bestsetup_bestfusion_lz.yaml line 55, the released
# face model; train_configs/mercaptionplus_outputhybird_bestsetup_bestfusion_frame_lz.yaml line 55). Others,
# e.g. multiface_text (multi token only) or multiface_audio_face_frame_text (adds a frame token), name other
# prompts (my_affectgpt/datasets/datasets/base_dataset.py lines 521-546).
VISUAL_STREAMS = {"multiface_audio_face_text": "face", "multiframe_audio_frame_text": "frame"}
# config["model"] of the released architecture, and the release's value of a key the section lacks (its
# cfg.get defaults, my_affectgpt/models/affectgpt.py lines 737-759; None: no default, the release fails).
RELEASED_MODEL: dict[str, tuple[object, object]] = {
    "llama_model": ("Qwen25", None),
    "visual_encoder": ("CLIP_VIT_LARGE", None),
    "acoustic_encoder": ("HUBERT_LARGE", None),
    "num_video_query_token": (1, None),
    "num_audio_query_token": (1, None),
    "num_multi_query_token": (1, None),
    "video_fusion_type": ("attention", "qformer"),
    "audio_fusion_type": ("attention", "qformer"),
    "multi_fusion_type": ("attention", "attention"),
    "lora_r": (16, 16),
}
# The release's LoRA: rank lora_r (16), alpha 32 and dropout 0.05 written in its code, on these projections
# of every layer (my_affectgpt/models/affectgpt.py lines 111-117).
RELEASED_LORA_ALPHA = 32
RELEASED_LORA_DROPOUT = 0.05
RELEASED_LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_LORA_KEY = re.compile(r"^llama_model\.base_model\.model\.model\.layers\.(\d+)\.")
_LORA_TENSOR = re.compile(r"^llama_model\.base_model\.model\.model\.layers\.(\d+)\.(.+)\.lora_([AB])\.default\.weight$")


class ReleasedCheckpointError(InputError):
    """A released checkpoint that cannot be imported; the message names the file and every problem."""


@dataclass
class Imported:
    """What :func:`import_released` wrote."""

    out: Path
    source: Path
    sha256: str
    epoch: int | None
    visual_stream: str
    used: int  # tensors mapped onto our model
    dropped: list[str] = field(default_factory=list)  # tensors left out on purpose


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_released(path: str | Path) -> dict:
    """The released file's top-level dict, read with ``weights_only=True`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"released checkpoint {path} does not exist")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReleasedCheckpointError(
            f"{path}: refused: the file needs arbitrary unpickling, which could run code "
            f"(torch.load weights_only=True said: {first})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ReleasedCheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        found = f"keys {sorted(map(str, data))}" if isinstance(data, dict) else type(data).__name__
        raise ReleasedCheckpointError(f"{path}: expected a dict with a 'model' state dict (a released AffectGPT "
                                      f"checkpoint_*.pth); found {found}")
    return data


def visual_stream_of(data: dict, path: str | Path, override: str | None = None) -> str:
    """``face`` or ``frame``: the file's ``face_or_frame`` (one of :data:`VISUAL_STREAMS`), else ``override``.

    A file naming another setting is refused whatever ``override`` says: its prompt is not one we build.
    """
    if override and override not in ("face", "frame"):
        raise ReleasedCheckpointError(f"--visual must be face or frame, got {override!r}")
    value = None
    try:
        value = data["config"]["datasets"]["mercaptionplus"]["face_or_frame"]
    except (KeyError, TypeError):
        pass
    supported = " or ".join(f"{k} ({v})" for k, v in VISUAL_STREAMS.items())
    if value is not None:
        stream = VISUAL_STREAMS.get(value) if isinstance(value, str) else None
        if stream is None:
            raise ReleasedCheckpointError(f"{path}: face_or_frame={value!r} is not a setting the release ships: "
                                          f"this importer supports {supported}")
        if override and override != stream:
            raise ReleasedCheckpointError(f"{path}: --visual {override} contradicts the file's "
                                          f"face_or_frame={value!r} ({stream})")
        return stream
    if override:
        return override
    raise ReleasedCheckpointError(f"{path}: the file does not say which visual stream it was trained on (no "
                                  "config['datasets']['mercaptionplus']['face_or_frame']): pass --visual face or "
                                  f"--visual frame ({supported})")


def model_config_problems(data: dict) -> list[str]:
    """How the file's ``config["model"]`` differs from the released architecture (:data:`RELEASED_MODEL`);
    nothing when the file carries no (or an empty) model section."""
    cfg = data.get("config")
    section = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(section, dict) or not section:
        return []
    problems = []
    for key, (want, default) in RELEASED_MODEL.items():
        got = section.get(key, default)
        if got != want or type(got) is not type(want):
            said = f"{key}={got!r}" if key in section else f"no {key} (the release then uses {default!r})"
            problems.append(f"config['model']: {said}; the released model has {key}={want!r}")
    return problems


def lora_problems(state: dict) -> list[str]:
    """How the file's LoRA tensors differ from the release's: rank (``lora_r``) and target projections."""
    ranks: set[int] = set()
    targets: dict[int, set[str]] = {}
    for key, t in state.items():
        m = _LORA_TENSOR.match(key)
        if not m or not isinstance(t, torch.Tensor) or t.dim() != 2:
            continue
        targets.setdefault(int(m.group(1)), set()).add(m.group(2))
        ranks.add(int(t.shape[0] if m.group(3) == "A" else t.shape[1]))
    problems = []
    want_r = RELEASED_MODEL["lora_r"][0]
    if ranks and ranks != {want_r}:
        problems.append(f"LoRA rank: the file's lora_A/lora_B tensors have rank {sorted(ranks)}; the released "
                        f"model has rank {want_r} (lora_alpha {RELEASED_LORA_ALPHA})")
    want = set(RELEASED_LORA_TARGETS)
    odd: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
    for layer, found in sorted(targets.items()):
        if found != want:
            odd.setdefault((tuple(sorted(found - want)), tuple(sorted(want - found))), []).append(layer)
    for (extra, missing), layers in odd.items():
        what = "; ".join(filter(None, [f"extra {list(extra)}" if extra else "",
                                       f"missing {list(missing)}" if missing else ""]))
        problems.append(f"LoRA targets of layer(s) {', '.join(map(str, layers))}: {what} (the release's: "
                        f"{', '.join(RELEASED_LORA_TARGETS)})")
    return problems


def to_released_name(ours: str) -> str:
    """Our trainable parameter name -> the released key (``fusion.visual_proj.weight`` -> ``affectgpt_proj.weight``)."""
    if ours.startswith(OUR_FUSION_PREFIX):
        module, rest = ours[len(OUR_FUSION_PREFIX):].split(".", 1)
        return f"{RELEASED_NAMES[module]}.{rest}"
    if ours.startswith(OUR_LLM_PREFIX):
        return RELEASED_LLM_PREFIX + ours[len(OUR_LLM_PREFIX):]
    raise ValueError(f"no released name for parameter {ours!r}")


def llm_config(llm_dir: str | Path) -> dict:
    """The base LLM folder's ``config.json`` as Qwen2 config fields."""
    from transformers import AutoConfig

    llm_dir = Path(llm_dir)
    if not (llm_dir / "config.json").is_file():
        raise MissingFileError(f"--llm {llm_dir}: no config.json (expected a local Qwen2.5-7B-Instruct folder)")
    return AutoConfig.from_pretrained(str(llm_dir)).to_dict()


def expected_model(llm_cfg: dict, visual_dim: int, audio_dim: int, visual_stream: str, *,
                   lora_r: int = RELEASED_MODEL["lora_r"][0], lora_alpha: int = RELEASED_LORA_ALPHA,
                   lora_dropout: float = RELEASED_LORA_DROPOUT, llm_path: str = "") -> AffectGPT:
    """Our model on the meta device at the LLM's shapes: its trainable parameters are the import's target."""
    shape = ModelConfig(preset="qwen2.5-7b", visual_stream=visual_stream, lora_r=lora_r, lora_alpha=lora_alpha,
                        lora_dropout=lora_dropout)
    model = build_model(shape, llm_config=llm_cfg, visual_dim=visual_dim, audio_dim=audio_dim, seed=None,
                        device="meta")
    model.spec.llm_path = llm_path
    sevenb = (llm_cfg.get("hidden_size"), llm_cfg.get("num_hidden_layers")) == (3584, 28)
    model.spec.preset = "qwen2.5-7b" if sevenb else "tiny"
    return model


def key_map(model: AffectGPT) -> dict[str, str]:
    """``{released key: our parameter name}`` for every trainable parameter of ``model``."""
    return {to_released_name(n): n for n, p in model.named_parameters() if p.requires_grad}


def _dims(state: dict) -> tuple[int, int]:
    """(visual_dim, audio_dim) read from the scorers' input widths (768/1024 when a key is missing)."""
    def width(key: str, default: int) -> int:
        t = state.get(key)
        return int(t.shape[-1]) if isinstance(t, torch.Tensor) and t.dim() == 2 else default

    return width("video_attention_mlp.weight", 768), width("audio_attention_mlp.weight", 1024)


def check(state: dict, model: AffectGPT, llm_cfg: dict, path: Path) -> dict[str, str]:
    """Every problem of ``state`` against ``model``, raised at once; returns the key map when there is none."""
    problems: list[str] = []
    layers = sorted({int(m.group(1)) for k in state if (m := _LORA_KEY.match(k))})
    want_layers = int(llm_cfg["num_hidden_layers"])
    if layers and len(layers) != want_layers:
        problems.append(f"layer count: the file has LoRA weights for {len(layers)} layers (0..{layers[-1]}), "
                        f"the LLM config has num_hidden_layers={want_layers}")
    proj = state.get("affectgpt_proj.weight")
    hidden = int(llm_cfg["hidden_size"])
    if isinstance(proj, torch.Tensor) and proj.dim() == 2 and proj.shape[0] != hidden:
        problems.append(f"hidden size: the file's projectors output {proj.shape[0]}, the LLM config has "
                        f"hidden_size={hidden}")
    mapping = key_map(model)
    params = dict(model.named_parameters())
    missing = sorted(k for k in mapping if k not in state)
    unexpected = sorted(k for k in state if k not in mapping and k not in DROPPED)
    for k in missing:
        problems.append(f"missing key {k} (expected shape {list(params[mapping[k]].shape)})")
    for k in unexpected:
        shape = list(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
        problems.append(f"unexpected key {k} (shape {shape})")
    for k, ours in mapping.items():
        t = state.get(k)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            problems.append(f"{k}: not a tensor ({type(t).__name__})")
        elif tuple(t.shape) != tuple(params[ours].shape):
            problems.append(f"shape mismatch {k}: file {list(t.shape)}, model {list(params[ours].shape)}")
        elif not torch.is_floating_point(t):
            problems.append(f"{k}: dtype {t.dtype} is not floating point")
    if problems:
        shown = problems[:40] + ([f"... and {len(problems) - 40} more"] if len(problems) > 40 else [])
        raise ReleasedCheckpointError(f"{path}: cannot import ({len(problems)} problem(s)):\n  " + "\n  ".join(shown))
    return mapping


def import_released(ckpt: str | Path, llm: str | Path, out: str | Path, visual: str | None = None) -> Imported:
    """Check ``ckpt`` against the LLM at ``llm`` and write our checkpoint folder to ``out``.

    Writes ``adapter/`` (peft), ``fusion.safetensors`` and ``affectflow_model.json`` (with the
    source file's name, sha256 and epoch), loadable by every command that takes ``--model``.
    Nothing is written to ``out`` on any error; an ``out`` that exists and is not empty is refused.
    """
    ckpt, llm, out = Path(ckpt), Path(llm).resolve(), Path(out)
    require_writable(out, "--out", folder=True)  # before a 7B file is read and hashed
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out} exists and is not an empty folder: choose a new one")
    data = load_released(ckpt)
    state = data["model"]
    stream = visual_stream_of(data, ckpt, visual)
    problems = model_config_problems(data) + lora_problems(state)
    if problems:
        raise ReleasedCheckpointError(f"{ckpt}: not the released AffectGPT architecture ({len(problems)} "
                                      "problem(s)):\n  " + "\n  ".join(problems[:40]))
    cfg = llm_config(llm)
    visual_dim, audio_dim = _dims(state)
    model = expected_model(cfg, visual_dim, audio_dim, stream, llm_path=str(llm))
    mapping = check(state, model, cfg, ckpt)
    sha = file_sha256(ckpt)
    epoch = data.get("epoch")
    epoch = int(epoch) if isinstance(epoch, (int, float)) or (isinstance(epoch, torch.Tensor) and epoch.numel() == 1) \
        else None
    # Put the file's tensors in place of the meta parameters (the frozen base stays on meta: only
    # the trainable weights are saved).
    model.load_state_dict({ours: state[k].float() for k, ours in mapping.items()}, strict=False, assign=True)
    model.spec.source = {"format": RELEASED_FORMAT, "file": ckpt.name, "sha256": sha, "epoch": epoch,
                         "dropped": [k for k in DROPPED if k in state]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        model.save_trainable(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Imported(out=out, source=ckpt, sha256=sha, epoch=epoch, visual_stream=stream, used=len(mapping),
                    dropped=[k for k in DROPPED if k in state])
