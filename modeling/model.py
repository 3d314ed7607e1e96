"""The AffectGPT model: feature fusion + projectors + Qwen2 with LoRA.

Public API (used by training here and by generation/serving elsewhere):

- :func:`build_model` / :func:`build_from_config`: presets ``tiny`` (a local tiny Qwen2 from
  ``affectflow tiny-models``) and ``qwen2.5-7b`` (a local Qwen2.5-7B-Instruct folder, or the
  meta device with no weights at all for counting).
- :meth:`AffectGPT.encode_multimodal` ``(visual [B,8,Dv], audio [B,8,Da]) -> [B,3,H]``
  (order: multi, audio, visual — the order of the placeholders in the prompt).
- :meth:`AffectGPT.inputs_embeds` ``(input_ids, mm) -> [B,T,H]``: token embeddings with the
  three vectors spliced at the placeholder positions; feed it to ``model.llm.generate``.
- :meth:`AffectGPT.forward` ``(input_ids, attention_mask, labels, visual, audio)``: the HF
  causal-LM output (``.loss`` masked where labels are -100).
- :meth:`AffectGPT.save_trainable` / :meth:`AffectGPT.load_trainable`: a checkpoint of the
  trainable weights only (peft adapter + ``fusion.safetensors`` + ``affectflow_model.json``).
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.errors import ConfigError, MissingFileError, ModelRefError
from core.sections import ModelConfig
from modeling.checkpoint import ADAPTER_DIR, FUSION_FILE, SPEC_FILE
from modeling.prompt import AUDIO_TOKEN, MULTI_TOKEN, PLACEHOLDER_TOKENS, visual_token

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SPEC_VERSION = 1

# Qwen2.5-7B(-Instruct) shapes, written here so the model can be counted without the weights.
QWEN25_7B_CONFIG = dict(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    tie_word_embeddings=False,
    bos_token_id=151643,
    eos_token_id=151645,
)
# Feature widths of the real encoders (CLIP ViT-L/14 projection, HuBERT-large).
REAL_VISUAL_DIM = 768
REAL_AUDIO_DIM = 1024

# Our fusion module names -> the released AffectGPT checkpoint's (for a future importer;
# the released `image_llama_proj` is unused and has no counterpart here: skip its key, and
# its LoRA weights live under `llama_model.` where ours live under `llm.`).
RELEASED_NAMES = {
    "visual_scorer": "video_attention_mlp",
    "visual_proj": "affectgpt_proj",
    "audio_scorer": "audio_attention_mlp",
    "audio_proj": "audio_llama_proj",
    "multi_visual": "multi_video_embs",
    "multi_audio": "multi_audio_embs",
    "multi_attention": "attention_mlp",
    "multi_weights": "fc_att",
    "multi_proj": "multi_llama_proj",
}
PROJECTORS = ("visual_proj", "audio_proj", "multi_proj")


@dataclass
class ModelSpec:
    """What a trainable checkpoint needs besides its weights to be rebuilt."""

    preset: str
    visual_dim: int
    audio_dim: int
    hidden_size: int
    visual_stream: str = "face"
    pooling: str = "raw"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    placeholders: list[str] = field(default_factory=lambda: list(PLACEHOLDER_TOKENS))
    llm_path: str = ""
    format_version: int = SPEC_VERSION
    # Where the weights came from when they were imported (file, sha256, epoch); empty when trained here.
    source: dict = field(default_factory=dict)


class MultimodalFusion(nn.Module):
    """Score-pooled visual and audio tokens plus the pre-fusion multi token, projected to H."""

    def __init__(self, visual_dim: int, audio_dim: int, hidden: int, pooling: str = "raw"):
        super().__init__()
        if pooling not in ("raw", "softmax"):
            raise ValueError(f"pooling must be 'raw' or 'softmax', got {pooling!r}")
        self.pooling = pooling
        fuse = max(visual_dim, audio_dim)
        self.visual_scorer = nn.Linear(visual_dim, 1)
        self.visual_proj = nn.Linear(visual_dim, hidden)
        self.audio_scorer = nn.Linear(audio_dim, 1)
        self.audio_proj = nn.Linear(audio_dim, hidden)
        self.multi_visual = nn.Linear(visual_dim, fuse)
        self.multi_audio = nn.Linear(audio_dim, fuse)
        self.multi_attention = nn.Linear(2 * fuse, fuse)
        self.multi_weights = nn.Linear(fuse, 2)
        self.multi_proj = nn.Linear(fuse, hidden)

    # Weighted sums are matmuls, as the released model writes them (affectgpt.py encode_*_attention): under
    # fp16 autocast a matmul rounds once, after accumulating, where a product-then-sum would round each term.
    def _pool(self, x: torch.Tensor, scorer: nn.Linear) -> torch.Tensor:
        scores = scorer(x)  # [B, T, 1]
        if self.pooling == "softmax":
            scores = scores.softmax(dim=1)
        return torch.matmul(x.transpose(1, 2), scores).squeeze(2)  # the released model: raw scores

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        v = self.multi_visual(visual.mean(dim=1))
        a = self.multi_audio(audio.mean(dim=1))
        w = self.multi_weights(self.multi_attention(torch.cat([v, a], dim=-1)))  # [B, 2] raw weights
        multi = torch.matmul(torch.stack([v, a], dim=2), w.unsqueeze(2)).squeeze(2)  # w0 * v + w1 * a
        tokens = [
            self.multi_proj(multi),
            self.audio_proj(self._pool(audio, self.audio_scorer)),
            self.visual_proj(self._pool(visual, self.visual_scorer)),
        ]
        return torch.stack(tokens, dim=1)  # [B, 3, H]: multi, audio, visual


class AffectGPT(nn.Module):
    """Fusion + LoRA-wrapped causal LM; see the module docstring for the public API."""

    def __init__(self, llm: nn.Module, fusion: MultimodalFusion, spec: ModelSpec, tokenizer=None,
                 placeholder_ids: dict[str, int] | None = None):
        super().__init__()
        self.llm = llm
        self.fusion = fusion
        self.spec = spec
        self.tokenizer = tokenizer
        ids = placeholder_ids or {}
        # fp16 as the released model runs: the fusion keeps fp32 weights and runs under fp16 autocast.
        self.autocast_dtype: torch.dtype | None = None
        vis = visual_token(spec.visual_stream)
        # Splice order = the order of the placeholders in the prompt.
        self.splice_ids = [ids[t] for t in (MULTI_TOKEN, AUDIO_TOKEN, vis)] if ids else []

    @property
    def hidden_size(self) -> int:
        return self.spec.hidden_size

    def encode_multimodal(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``[B,8,Dv], [B,8,Da] -> [B,3,H]`` (multi, audio, visual) in the fusion's dtype, or under
        ``autocast_dtype`` autocast when it is set (:meth:`load_trainable` in fp16)."""
        dtype = self.fusion.multi_proj.weight.dtype
        visual, audio = visual.to(dtype), audio.to(dtype)
        if self.autocast_dtype is None:
            return self.fusion(visual, audio)
        with torch.autocast(visual.device.type, dtype=self.autocast_dtype):
            return self.fusion(visual, audio)

    def inputs_embeds(self, input_ids: torch.Tensor, mm: torch.Tensor) -> torch.Tensor:
        """Token embeddings of ``input_ids`` with ``mm[:, k]`` at the k-th placeholder of each row.

        Every row must hold each of the three placeholders exactly once.
        """
        if not self.splice_ids:
            raise RuntimeError("this model was built without a tokenizer: no placeholder ids")
        embeds = self.llm.get_input_embeddings()(input_ids)
        for k, token_id in enumerate(self.splice_ids):
            hit = input_ids == token_id
            counts = hit.sum(dim=1)
            if bool((counts != 1).any()):
                raise ValueError(
                    f"every row needs exactly one placeholder id {token_id} (k={k}); got counts {counts.tolist()}"
                )
            embeds = torch.where(hit.unsqueeze(-1), mm[:, k : k + 1, :].to(embeds.dtype), embeds)
        return embeds

    def forward(self, input_ids, attention_mask=None, labels=None, visual=None, audio=None, **kwargs):
        """The LLM's output on spliced embeddings; ``.loss`` is the token-mean CE where labels != -100."""
        mm = self.encode_multimodal(visual, audio)
        embeds = self.inputs_embeds(input_ids, mm)
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    # ---- trainable weights -------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of the trainable parameters (LoRA + fusion), by full name."""
        return {n: p.detach().to("cpu", copy=True) for n, p in self.named_parameters() if p.requires_grad}

    def save_trainable(self, out: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write ``adapter/`` (peft), ``fusion.safetensors`` and ``affectflow_model.json`` under ``out``.

        ``state_dict`` (full names, as :meth:`trainable_state_dict`) overrides the live
        parameters; the trainer passes gathered copies under ZeRO-3, where they are empty.
        """
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.trainable_state_dict()
        lora = {n[len("llm."):]: t for n, t in sd.items() if n.startswith("llm.")}
        fusion = {n[len("fusion."):]: t.float().contiguous() for n, t in sd.items() if n.startswith("fusion.")}
        if not lora or not fusion or any(t.numel() == 0 for t in [*lora.values(), *fusion.values()]):
            raise RuntimeError("refusing to save empty trainable weights (ZeRO-3 parameters not gathered?)")
        lora = {n: t.float().contiguous() for n, t in lora.items()}
        self.llm.save_pretrained(out / ADAPTER_DIR, state_dict=lora, save_embedding_layers=False)
        save_file(fusion, str(out / FUSION_FILE), metadata={"released_names": json.dumps(RELEASED_NAMES)})
        (out / SPEC_FILE).write_text(json.dumps(asdict(self.spec), indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load_trainable(cls, ckpt: str | Path, llm_path: str | Path | None = None, *, dtype=torch.float32,
                       device: str | torch.device = "cpu", is_trainable: bool = False) -> "AffectGPT":
        """Rebuild a model from a :meth:`save_trainable` folder on the base LLM at ``llm_path``
        (default: the path recorded in the spec), the LLM in ``dtype``. The fusion is in ``dtype`` too, but
        for float16: then, as the released model runs, it keeps float32 weights under fp16 autocast."""
        from peft import PeftModel
        from safetensors.torch import load_file

        ckpt = Path(ckpt)
        spec_path = ckpt / SPEC_FILE
        if not spec_path.is_file():
            raise MissingFileError(f"{ckpt} is not an AffectFlow checkpoint: {SPEC_FILE} is missing")
        spec = ModelSpec(**json.loads(spec_path.read_text(encoding="utf-8")))
        path = Path(llm_path or spec.llm_path)
        base, tok, ids = _load_base(path, dtype)
        llm = PeftModel.from_pretrained(base, str(ckpt / ADAPTER_DIR), is_trainable=is_trainable)
        fusion = MultimodalFusion(spec.visual_dim, spec.audio_dim, spec.hidden_size, spec.pooling)
        fusion.load_state_dict(load_file(str(ckpt / FUSION_FILE)))
        fusion.to(torch.float32 if dtype == torch.float16 else dtype)
        fusion.requires_grad_(is_trainable)
        spec.llm_path = str(path)
        model = cls(llm, fusion, spec, tok, ids).to(device)
        model.autocast_dtype = torch.float16 if dtype == torch.float16 else None
        return model if is_trainable else model.eval()

    def parameter_counts(self) -> dict[str, int]:
        """Parameters by part: lora, fusion, projectors, trainable, frozen, total."""
        counts = dict(lora=0, fusion=0, projectors=0, trainable=0, frozen=0, total=0)
        for name, p in self.named_parameters():
            n = _numel(p)
            counts["total"] += n
            if not p.requires_grad:
                counts["frozen"] += n
                continue
            counts["trainable"] += n
            if "lora_" in name:
                counts["lora"] += n
            elif name.startswith("fusion.") and name.split(".")[1] in PROJECTORS:
                counts["projectors"] += n
            elif name.startswith("fusion."):
                counts["fusion"] += n
        return counts


@contextmanager
def _default_dtype(dtype: torch.dtype):
    # Build a random base directly in its dtype: a 7B model in fp32 first would need 30 GB.
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def _numel(p: torch.Tensor) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 keeps the real size in ds_numel


def _load_base(path: Path, dtype):
    """Tokenizer (+ placeholders) and the base causal LM from a local folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise MissingFileError(f"no LLM checkpoint at {path} (config.json missing)")
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.add_tokens(list(PLACEHOLDER_TOKENS), special_tokens=True)
    if tok.eos_token_id is None:
        raise ModelRefError(f"the tokenizer at {path} has no EOS token")
    tok.pad_token = tok.eos_token  # Pad = EOS, as in the released model
    base = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    if len(tok) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tok), pad_to_multiple_of=64, mean_resizing=False)
    base.requires_grad_(False)  # resizing creates fresh (trainable) embedding tables
    ids = {t: tok.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS}
    return base, tok, ids


def add_lora(base: nn.Module, r: int, alpha: int, dropout: float):
    """``base`` wrapped by peft with a LoRA of rank ``r`` on the attention and MLP projections (LORA_TARGETS)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LORA_TARGETS),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def build_model(
    model: ModelConfig | str = "tiny",
    *,
    llm_path: str | Path | None = None,
    visual_dim: int | None = None,
    audio_dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int | None = 0,
    llm_config: dict | None = None,
    device: str | torch.device = "cpu",
) -> AffectGPT:
    """Assemble AffectGPT: base LLM frozen, LoRA and fusion trainable.

    ``model``: a preset name (``tiny``, ``qwen2.5-7b``) or a `ModelConfig` (preset, base LLM folder,
    visual stream, pooling, LoRA shape, gradient checkpointing); ``llm_path`` given here wins over
    its ``llm_path``. ``device="meta"`` builds the ``qwen2.5-7b`` shapes with no weights and no
    tokenizer, for counting. ``visual_dim``/``audio_dim`` come from the feature store's encoder specs
    (defaults: the real 768/1024). ``seed`` fixes the LoRA and fusion init, so every data-parallel
    rank starts from the same weights. ``llm_config`` (Qwen2Config fields) builds a randomly
    initialised base on ``device`` instead of loading one (benches); its placeholder ids are the last
    vocabulary rows and it has no tokenizer.
    """
    cfg = ModelConfig(preset=model) if isinstance(model, str) else model
    preset = cfg.preset
    if preset not in ("tiny", "qwen2.5-7b"):
        raise ConfigError(f"unknown model preset {preset!r} (known: tiny, qwen2.5-7b)")
    llm_path = llm_path or cfg.llm_path
    meta = str(device) == "meta"
    visual_dim = visual_dim or REAL_VISUAL_DIM
    audio_dim = audio_dim or REAL_AUDIO_DIM
    rng = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        if meta or llm_config is not None:
            from transformers import Qwen2Config, Qwen2ForCausalLM

            if meta and preset != "qwen2.5-7b":
                raise ValueError("meta builds are for the qwen2.5-7b preset (the tiny one is cheap to build)")
            config = Qwen2Config(**(llm_config if llm_config is not None else QWEN25_7B_CONFIG))
            with torch.device(device), _default_dtype(dtype):
                base = Qwen2ForCausalLM(config)
            base.requires_grad_(False)
            tok, path = None, ""
            # No tokenizer: the placeholders take the last rows of the (padded) vocabulary.
            ids = {t: config.vocab_size - len(PLACEHOLDER_TOKENS) + i for i, t in enumerate(PLACEHOLDER_TOKENS)}
        else:
            if not llm_path:
                raise ConfigError(f"preset {preset!r} needs llm_path (a local checkpoint folder)")
            path = Path(llm_path)
            base, tok, ids = _load_base(path, dtype)
        hidden = base.config.hidden_size
        llm = add_lora(base, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
        if cfg.gradient_checkpointing:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        with torch.device(device):
            fusion = MultimodalFusion(visual_dim, audio_dim, hidden, cfg.pooling)
        fusion.to(dtype)
    spec = ModelSpec(preset=preset, visual_dim=visual_dim, audio_dim=audio_dim, hidden_size=hidden,
                     visual_stream=cfg.visual_stream, pooling=cfg.pooling, lora_r=cfg.lora_r,
                     lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, llm_path=str(path))
    return AffectGPT(llm, fusion, spec, tok, ids)


def resolve_llm_path(model_cfg, models_dir: str | Path | None) -> Path:
    """The base LLM folder for a config: ``model.llm_path``, else ``<models>/qwen2`` for tiny."""
    from core.errors import InputError

    if model_cfg.llm_path:
        path = Path(model_cfg.llm_path)
    elif model_cfg.preset == "tiny" and models_dir:
        path = Path(models_dir) / "qwen2"
    else:
        raise InputError(
            f"preset {model_cfg.preset!r} needs a local base LLM: pass --models DIR "
            "or --set model.llm_path=/path/to/Qwen2.5-7B-Instruct"
        )
    if not (path / "config.json").is_file():
        hint = " (write the tiny models with `affectflow tiny-models DIR`)" if model_cfg.preset == "tiny" else ""
        raise InputError(f"no base LLM at {path}: config.json not found{hint}")
    return path


def build_from_config(model_cfg, llm_path: str | Path | None, visual_dim: int, audio_dim: int, *,
                      seed: int = 0, dtype=torch.float32, meta: bool = False) -> AffectGPT:
    """:func:`build_model` from a ``ModelConfig`` section and the base LLM folder resolved for it."""
    return build_model(model_cfg, llm_path=llm_path, visual_dim=visual_dim, audio_dim=audio_dim, dtype=dtype,
                       seed=seed, device="meta" if meta else "cpu")


def model_summary(preset: str = "qwen2.5-7b", llm_path: str | Path | None = None,
                  visual_dim: int | None = None, audio_dim: int | None = None) -> dict:
    """Parameter counts by part; ``qwen2.5-7b`` without ``llm_path`` is counted on the meta device."""
    meta = preset == "qwen2.5-7b" and not llm_path
    model = build_model(preset, llm_path=llm_path, visual_dim=visual_dim, audio_dim=audio_dim,
                        device="meta" if meta else "cpu")
    return {"preset": preset, "meta": meta, "hidden_size": model.hidden_size,
            "visual_dim": model.spec.visual_dim, "audio_dim": model.spec.audio_dim,
            "counts": model.parameter_counts()}
