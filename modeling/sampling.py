"""Sampling settings and the choice of each next token: greedy by default, or seeded sampling with the
repetition penalty, temperature, top-k and top-p in transformers' order.

- :class:`DecodingSettings` — what a user asks for (the run config's ``label`` section, or a served
  model's request params), built in one place by :meth:`DecodingSettings.from_config` /
  :meth:`DecodingSettings.from_params` and turned into a :class:`GenerationConfig` for a loaded LLM by
  :meth:`DecodingSettings.resolve`. Labeling, single-video inference, the benchmark and the MLflow
  pyfunc model all go through it, so they decode alike.
- :class:`GenerationConfig` — the resolved settings the decode loops take.
- :func:`released_config` — the release's sampling; :func:`llm_defaults` — what it reads of an LLM folder.
- :func:`pick_tokens` — one step's choice per row.
- :func:`sample_seed` — the per-(sample, task) seed, so a seeded row does not depend on its batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from core.errors import ConfigError
from modeling.checkpoint import DTYPES
from modeling.prompt import MAX_PROMPT_TOKENS

# The release's sampling when the LLM's generation_config leaves top_k unset (transformers' default).
HF_DEFAULT_TOP_K = 50
BACKENDS = ("auto", "hf", "static")
DECODINGS = ("greedy", "released")


@dataclass
class GenerationConfig:
    """Decoding settings; the defaults are ours (greedy). :func:`released_config` gives the release's.

    ``max_new_tokens`` None: each row's task budget (``modeling.prompt.MAX_NEW_TOKENS``). The prompt
    budget ``max_prompt_tokens`` is independent of it: only the subtitle is shortened to fit.
    ``top_k`` 0 and ``repetition_penalty`` 1.0 are off. ``backend``: see the module docstring;
    the static cache holds ``cache_rows`` rows of ``cache_tokens`` tokens (prompt + new tokens;
    0: ``max_prompt_tokens`` + the largest budget of the call's rows).
    """

    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 0.9
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    top_k: int = 0
    repetition_penalty: float = 1.0
    backend: str = "hf"
    cache_rows: int = 64
    cache_tokens: int = 0

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.cache_rows < 1:
            raise ConfigError(f"cache_rows must be >= 1, got {self.cache_rows}")
        if self.cache_tokens < 0:
            raise ConfigError(f"cache_tokens must be >= 0 (0 = prompt budget + the largest answer budget), "
                              f"got {self.cache_tokens}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1 (or unset: per task), got {self.max_new_tokens}")
        if self.max_prompt_tokens < 1:
            raise ConfigError(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise ConfigError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if self.do_sample and self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be within (0, 1], got {self.top_p}")


def released_config(llm, max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> GenerationConfig:
    """The release's decoding, as its ``generate`` call received it: sampling at temperature 1, top-p 0.9 and
    repetition penalty 1.0 (passed explicitly, so the LLM's ``generation_config`` value, 1.05 for Qwen2.5, never
    applied), up to 1,200 new tokens, and top-k from the LLM's ``generation_config`` (the one setting the
    release leaves to it)."""
    top_k = getattr(getattr(llm, "generation_config", None), "top_k", None)
    return GenerationConfig(max_new_tokens=1200, do_sample=True, temperature=1.0, top_p=0.9,
                            max_prompt_tokens=max_prompt_tokens,
                            top_k=HF_DEFAULT_TOP_K if top_k is None else int(top_k), repetition_penalty=1.0)


def llm_defaults(llm_path: str | Path) -> SimpleNamespace:
    """The LLM at ``llm_path`` as :meth:`DecodingSettings.resolve` reads it, without loading its weights: its
    ``generation_config`` as transformers' ``from_pretrained`` sets it (generation_config.json, else one made
    from config.json)."""
    from transformers import GenerationConfig as HFGenerationConfig

    try:
        gc = HFGenerationConfig.from_pretrained(str(llm_path))
    except OSError:
        gc = HFGenerationConfig.from_pretrained(str(llm_path), config_file_name="config.json", _from_model_config=True)
    return SimpleNamespace(generation_config=gc)


def sample_seed(seed: int, name: str, task: str) -> int:
    """The sampling seed of one (sample, task): a pure function, whatever the batch or worker."""
    digest = hashlib.blake2b(f"{seed}:{name}:{task}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF



def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail of each row outside the smallest set whose mass reaches ``top_p`` (>= 1 token kept)."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    drop = (sorted_p.cumsum(dim=-1) - sorted_p) > top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)


def pick_tokens(logits: torch.Tensor, cfg: GenerationConfig, gens: Sequence | None = None,
                seen: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's next token from its float32 logits: the repetition penalty on ``seen`` tokens, then
    the argmax, or, with ``gens``, temperature, top-k and top-p (transformers' order) and a draw from
    row ``i``'s generator ``gens[i]`` (a row whose generator is None takes the argmax)."""
    if seen is not None:
        penalised = torch.where(logits > 0, logits / cfg.repetition_penalty, logits * cfg.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if gens is None:
        return logits.argmax(dim=-1)
    greedy = logits.argmax(dim=-1) if any(g is None for g in gens) else None
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = logits.topk(min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = _top_p_filter(torch.softmax(logits, dim=-1), cfg.top_p)
    return torch.stack([greedy[i] if g is None else torch.multinomial(probs[i], 1, generator=g)[0]
                        for i, g in enumerate(gens)])



@dataclass(frozen=True)
class DecodingSettings:
    """How to decode, as asked: the decoding fields of the run config's ``label`` section.

    ``decoding``: ``greedy`` (ours; ``do_sample``/``temperature``/``top_p`` apply) or ``released`` (the
    release's sampling, :func:`released_config`; an explicit ``max_new_tokens`` still caps its 1,200).
    ``max_new_tokens`` 0: each task's own budget. ``backend`` ``auto``: static on CUDA, hf elsewhere.
    ``dtype``: the precision the model is loaded in (``modeling.checkpoint.pick_dtype``; ``auto``: what the
    checkpoint records).
    """

    decoding: str = "greedy"
    max_new_tokens: int = 0
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 0.9
    backend: str = "auto"
    cache_rows: int = 64
    cache_tokens: int = 0
    dtype: str = "auto"

    @classmethod
    def from_config(cls, label) -> DecodingSettings:
        """The settings of a run config's ``label`` section (any object with these attribute names)."""
        return cls(**{f.name: getattr(label, f.name) for f in fields(cls)}).checked()

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, base: DecodingSettings | None = None) -> DecodingSettings:
        """``base`` (default: the defaults) with a served request's params over it; unknown keys are ignored
        (``seed`` and the like belong to the caller)."""
        base = base or cls()
        given = {f.name: (params or {})[f.name] for f in fields(cls) if (params or {}).get(f.name) is not None}
        try:
            typed = {k: type(getattr(base, k))(v) if not isinstance(getattr(base, k), bool)
                     else str(v).lower() in ("1", "true", "yes") for k, v in given.items()}
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad decoding parameter in {sorted(given)}: {e}") from None
        return replace(base, **typed).checked()

    def checked(self) -> DecodingSettings:
        if self.decoding not in DECODINGS:
            raise ConfigError(f"decoding must be one of {', '.join(DECODINGS)}, got {self.decoding!r}")
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 1, or 0 for each task's own budget, "
                              f"got {self.max_new_tokens}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        self.resolve(None, device="cpu").validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolve(self, llm, device, *, single: bool = False) -> GenerationConfig:
        """The :class:`GenerationConfig` for ``llm`` (whose ``generation_config`` the released decoding
        reads) on ``device``. ``single``: one video at a time, where ``auto`` means hf (compiling the
        static step would cost more than it saves)."""
        backend = self.backend
        if backend == "auto":
            backend = "hf" if single or str(device).split(":")[0] != "cuda" else "static"
        cache = dict(backend=backend, cache_rows=self.cache_rows, cache_tokens=self.cache_tokens)
        if self.decoding == "released":
            gen = replace(released_config(llm, self.max_prompt_tokens), **cache)
            return replace(gen, max_new_tokens=self.max_new_tokens) if self.max_new_tokens else gen
        return GenerationConfig(max_new_tokens=self.max_new_tokens or None, do_sample=self.do_sample,
                                temperature=self.temperature, top_p=self.top_p,
                                max_prompt_tokens=self.max_prompt_tokens, **cache)
