"""Batched generation over spliced ``inputs_embeds``: left padding, greedy by default.

Our own decode loop instead of ``llm.generate``: it keeps a per-row random generator (so a
seeded sample does not depend on which other samples share its batch), honours the ``###``
stop string and EOS per row without a tokenizer-aware stopping criterion, and is the same
code on the CPU and on a GPU. Two backends (``GenerationConfig.backend``), same tokens:

- ``hf``: the KV cache is whatever the model returns (transformers 5 builds a ``DynamicCache``
  when ``use_cache=True``), fed back each step; a batch runs until its longest row ends.
- ``static``: :mod:`training.static_decode`, a preallocated ``rows x length`` cache, a one-token
  step compiled once on CUDA, and in-flight refill (a stopped row's slot takes the next row).
  ``auto`` is static on CUDA and hf elsewhere (on the CPU the static step runs eager).

The run config sets them as ``label.backend``, ``label.cache_rows`` and ``label.cache_tokens``, beside
the other decoding settings (``label.max_new_tokens``, ``label.decoding``, ``label.top_p`` ...) that
labeling, single-video inference and the benchmark all read; a ``generation`` section of its own would
split one concern over two sections.

- :func:`decode` — the hf loop on a causal LM: ``[B,T,H]`` embeddings + left-padded mask -> token ids.
- :func:`pick_tokens` — one step's choice per row (repetition penalty, greedy or seeded sampling).
- :func:`generate` — AffectGPT features + subtitles + tasks -> cleaned texts.
- :func:`clean_output` — the text after the assistant marker, cut at ``###`` / EOS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from training.prompt import (ANSWER_END, ASSISTANT_MARKER, MAX_NEW_TOKENS, MAX_PROMPT_TOKENS, QUESTION_TASK,
                             FittedPrompt, fit_prompt, question_for)
from core.errors import ConfigError

STOP_STRING = ANSWER_END  # "###": the trained answer ends with it
# Check "all rows done?" (a host sync) every few steps only, so the host can queue GPU work ahead.
CHECK_EVERY = 8


# The release's sampling when the LLM's generation_config leaves top_k unset (transformers' default).
HF_DEFAULT_TOP_K = 50
BACKENDS = ("auto", "hf", "static")


@dataclass
class GenerationConfig:
    """Decoding settings; the defaults are ours (greedy). :func:`released_config` gives the release's.

    ``max_new_tokens`` None: each row's task budget (``training.prompt.MAX_NEW_TOKENS``). The prompt
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
    """The release's decoding: sampling at temperature 1 and top-p 0.9, up to 1,200 new tokens, and the
    rest (top-k, repetition penalty) from the LLM's own ``generation_config``, as ``generate`` merged it."""
    gc = getattr(llm, "generation_config", None)
    top_k = getattr(gc, "top_k", None)
    penalty = getattr(gc, "repetition_penalty", None)
    return GenerationConfig(max_new_tokens=1200, do_sample=True, temperature=1.0, top_p=0.9,
                            max_prompt_tokens=max_prompt_tokens,
                            top_k=HF_DEFAULT_TOP_K if top_k is None else int(top_k),
                            repetition_penalty=1.0 if penalty is None else float(penalty))


@dataclass
class Decoded:
    """One row's generated ids (stop token excluded) and why it stopped: eos, stop, length,
    prompt-too-long (nothing generated: the prompt is over the budget even with no subtitle), or
    cache-too-long (nothing generated: its prompt + budget exceed the static cache's length)."""

    tokens: list[int]
    finish: str
    subtitle_cut: int = 0  # subtitle tokens dropped to fit the prompt budget


def sample_seed(seed: int, name: str, task: str) -> int:
    """The sampling seed of one (sample, task): a pure function, whatever the batch or worker."""
    digest = hashlib.blake2b(f"{seed}:{name}:{task}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with every row right-aligned (pads on the left)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def clean_output(text: str) -> str:
    """What follows the assistant marker, cut at the first ``###`` (as the released code did)."""
    marker = ASSISTANT_MARKER.strip()
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.split(STOP_STRING, 1)[0].strip()


_STOP_TABLES: dict[tuple[int, int, str], tuple[torch.Tensor, ...]] = {}


def stop_tables(tokenizer, vocab_rows: int, device) -> tuple[torch.Tensor, ...]:
    """Per-token ``#`` bookkeeping so ``###`` is found on the device, without decoding each step.

    ``(lead, trail, all_hash, has_stop)``: the token text's leading and trailing ``#`` counts,
    whether it is only ``#``, and whether it holds ``###`` itself. A row has produced ``###``
    when ``has_stop[t]`` or its running trailing-``#`` count plus ``lead[t]`` reaches 3. ``#``
    is ASCII, so byte-level BPE token strings hold it literally.
    """
    key = (id(tokenizer), vocab_rows, str(device))
    if key not in _STOP_TABLES:
        n = min(len(tokenizer), vocab_rows)
        lead = torch.zeros(vocab_rows, dtype=torch.long)
        trail = torch.zeros(vocab_rows, dtype=torch.long)
        only = torch.zeros(vocab_rows, dtype=torch.bool)
        has = torch.zeros(vocab_rows, dtype=torch.bool)
        for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(n)))):
            if not tok or "#" not in tok:
                continue
            lead[i] = len(tok) - len(tok.lstrip("#"))
            trail[i] = len(tok) - len(tok.rstrip("#"))
            only[i] = tok.strip("#") == ""
            has[i] = STOP_STRING in tok
        _STOP_TABLES[key] = tuple(t.to(device) for t in (lead, trail, only, has))
    return _STOP_TABLES[key]


def find_stops(tables: tuple[torch.Tensor, ...], nxt: torch.Tensor, hashes: torch.Tensor,
               live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``live`` rows whose token ``nxt`` completes ``###`` (see :func:`stop_tables`), and every
    row's new count of trailing '#'."""
    lead, trail, only, has = tables
    stop = (has[nxt] | (hashes + lead[nxt] >= len(STOP_STRING))) & live
    return stop, torch.where(only[nxt], hashes + lead[nxt], trail[nxt])


def forward_kwargs(llm) -> tuple[str, dict]:
    """The KV-cache keyword of this transformers (5.2x: ``cache``; before: ``past_key_values``) and
    the "last logits only" flag, so the prompt pass does not build ``[B, T, vocab]`` logits."""
    import inspect

    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    params = inspect.signature(type(base).forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    extra = {}
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            extra[name] = 1
            break
    return cache_kw, extra


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


@torch.inference_mode()
def decode(
    llm,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    eos_ids: Sequence[int],
    pad_id: int,
    config: GenerationConfig | None = None,
    seeds: Sequence[int] | None = None,
    tokenizer=None,
    max_new: Sequence[int] | None = None,
) -> list[Decoded]:
    """Generate from left-padded ``embeds [B,T,H]``; each row stops at EOS, at ``###`` or at its length.

    Greedy unless ``config.do_sample``; then row ``i`` samples from its own generator seeded
    with ``seeds[i]`` (default 0), after the repetition penalty, temperature, top-k and top-p
    (transformers' order). ``tokenizer`` enables the ``###`` stop string (tracked on the device,
    see :func:`stop_tables`). ``max_new``: each row's new-token budget (default ``config.max_new_tokens``).
    """
    cfg = config or GenerationConfig()
    cfg.validate()
    device = embeds.device
    b = embeds.shape[0]
    if max_new is None:
        if cfg.max_new_tokens is None:
            raise ConfigError("decode needs max_new (per row) or config.max_new_tokens")
        max_new = [cfg.max_new_tokens] * b
    if len(max_new) != b or min(max_new) < 1:
        raise ValueError(f"max_new must hold one budget >= 1 per row, got {list(max_new)} for {b} rows")
    limits = torch.as_tensor(list(max_new), dtype=torch.long, device=device)
    longest = int(max(max_new))
    mask = attention_mask.to(device)
    position = (mask.cumsum(dim=1) - 1).clamp(min=0)
    eos = torch.as_tensor(sorted(set(int(e) for e in eos_ids)), dtype=torch.long, device=device)
    gens = None
    if cfg.do_sample:
        seeds = list(seeds) if seeds is not None else [0] * b
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    tables = None
    # Per row, on the device: done yet, why (0 length, 1 eos, 2 stop), how many tokens to keep,
    # and the running count of trailing '#'. The host syncs only every CHECK_EVERY steps.
    done = torch.zeros(b, dtype=torch.bool, device=device)
    why = torch.zeros(b, dtype=torch.long, device=device)
    keep = limits.clone()
    seen = None  # [B, vocab]: tokens each row has generated (for the repetition penalty)
    hashes = torch.zeros(b, dtype=torch.long, device=device)
    steps: list[torch.Tensor] = []
    embed_layer = llm.get_input_embeddings()

    cache_kw, extra = forward_kwargs(llm)
    out = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position, use_cache=True, **extra)
    last_pos = position[:, -1:]
    for step in range(longest):
        logits = out.logits[:, -1, :].float()
        if cfg.repetition_penalty != 1.0 and seen is None:
            seen = torch.zeros_like(logits, dtype=torch.bool)
        nxt = pick_tokens(logits, cfg, gens, seen)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        if seen is not None:
            seen[torch.arange(b, device=device)[~done], nxt[~done]] = True
        steps.append(nxt)
        is_eos = torch.isin(nxt, eos) & ~done
        ended = is_eos
        if tokenizer is not None:
            if tables is None:
                tables = stop_tables(tokenizer, logits.shape[-1], device)
            stop, hashes = find_stops(tables, nxt, hashes, ~done & ~is_eos)
            why = torch.where(stop, 2, why)
            keep = torch.where(stop, step + 1, keep)  # the stop string stays in; clean_output cuts it
            ended = ended | stop
        why = torch.where(is_eos, 1, why)
        keep = torch.where(is_eos, step, keep)  # EOS itself is not output
        done = done | ended | (limits <= step + 1)  # a row at its length is done (why stays 0)
        if step == longest - 1:
            break
        if (step + 1) % CHECK_EVERY == 0 and bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=device)], dim=1)
        last_pos = last_pos + 1
        cache = getattr(out, "cache", None) if cache_kw == "cache" else out.past_key_values
        out = llm(inputs_embeds=embed_layer(nxt.unsqueeze(1)), attention_mask=mask, position_ids=last_pos,
                  use_cache=True, **{cache_kw: cache}, **extra)
    tokens = torch.stack(steps, dim=1).tolist()
    names = ("length", "eos", "stop")
    return [Decoded(row[:k], names[w]) for row, k, w in zip(tokens, keep.tolist(), why.tolist())]


def eos_ids_of(model) -> list[int]:
    """EOS ids: the tokenizer's plus the base model's generation config (Qwen lists two)."""
    ids = {int(model.tokenizer.eos_token_id)}
    gen_cfg = getattr(model.llm, "generation_config", None)
    extra = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(int(e) for e in extra)
    return sorted(ids)


def fit_prompts(model, subtitles: Sequence[str], questions: Sequence[str], config: GenerationConfig) -> list[FittedPrompt]:
    """Each row's prompt within ``config.max_prompt_tokens`` (only the subtitle is shortened)."""
    return [fit_prompt(model.tokenizer, s or "", q, model.spec.visual_stream, config.max_prompt_tokens)
            for s, q in zip(subtitles, questions, strict=True)]


def task_budget(task: str, config: GenerationConfig) -> int:
    """A row's new-token budget: ``config.max_new_tokens``, else its task's."""
    return config.max_new_tokens or MAX_NEW_TOKENS.get(task, MAX_NEW_TOKENS[QUESTION_TASK])


def build_inputs(model, subtitles: Sequence[str], tasks: Sequence[str], config: GenerationConfig,
                 questions: Sequence[str] | None = None):
    """Left-padded prompt ids and mask for rows of (subtitle, task or question); the subtitle is cut to fit."""
    qs = list(questions) if questions is not None else [question_for(t) for t in tasks]
    return left_pad([f.ids for f in fit_prompts(model, subtitles, qs, config)], model.tokenizer.pad_token_id)


def generate(
    model,
    visual: torch.Tensor,
    audio: torch.Tensor,
    subtitles: Sequence[str],
    tasks: Sequence[str],
    config: GenerationConfig | None = None,
    seeds: Sequence[int] | None = None,
    questions: Sequence[str] | None = None,
) -> list[str]:
    """Texts for a batch: ``visual [B,8,Dv]``, ``audio [B,8,Da]``, one subtitle and task per row.

    ``questions`` (one per row) replaces the tasks' questions; the task still sets the row's budget.
    """
    texts, _ = generate_raw(model, visual, audio, subtitles, tasks, config, seeds, questions)
    return [clean_output(t) for t in texts]


def resolve_backend(backend: str, device) -> str:
    """``hf`` or ``static``: ``auto`` is static on CUDA (compiled step) and hf elsewhere."""
    if backend == "auto":
        return "static" if torch.device(device).type == "cuda" else "hf"
    return backend


def generate_raw(model, visual, audio, subtitles, tasks, config=None, seeds=None,
                 questions=None) -> tuple[list[str], list[Decoded]]:
    """As :func:`generate`, but the uncleaned decoded texts and the per-row :class:`Decoded`.

    The one entry point that picks the backend (``config.backend``). A row whose prompt is over the
    budget even without its subtitle generates nothing (``finish == "prompt-too-long"``), nor does
    one over the static cache (``cache-too-long``); the other rows are unaffected.
    """
    cfg = config or GenerationConfig()
    cfg.validate()
    qs = list(questions) if questions is not None else [question_for(t) for t in tasks]
    fitted = fit_prompts(model, subtitles, qs, cfg)
    rows: list[Decoded] = [Decoded([], "prompt-too-long", f.subtitle_tokens) for f in fitted]
    live = [i for i, f in enumerate(fitted) if f.fits]
    if live:
        device = next(model.fusion.parameters()).device
        ids, mask = left_pad([fitted[i].ids for i in live], model.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        visual, audio = torch.as_tensor(visual), torch.as_tensor(audio)
        with torch.inference_mode():
            mm = model.encode_multimodal(visual[live].to(device), audio[live].to(device))
            embeds = model.inputs_embeds(ids, mm)
        budgets = [task_budget(tasks[i], cfg) for i in live]
        kwargs = dict(eos_ids=eos_ids_of(model), pad_id=model.tokenizer.pad_token_id, config=cfg,
                      seeds=None if seeds is None else [seeds[i] for i in live], tokenizer=model.tokenizer,
                      max_new=budgets)
        if resolve_backend(cfg.backend, device) == "static":
            from training.static_decode import static_decoder

            length = cfg.cache_tokens or cfg.max_prompt_tokens + max(budgets)
            out = static_decoder(model.llm, cfg.cache_rows, length).decode(embeds, mask, **kwargs)
        else:
            out = decode(model.llm, embeds, mask, **kwargs)
        for i, r in zip(live, out):
            r.subtitle_cut = fitted[i].subtitle_tokens - fitted[i].subtitle_kept
            rows[i] = r
    texts = [model.tokenizer.decode(r.tokens, skip_special_tokens=True) for r in rows]
    return texts, rows
