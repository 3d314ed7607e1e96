"""The ``hf`` decode loop: the KV cache is whatever the model returns (transformers 5 builds a
``DynamicCache`` when ``use_cache=True``), fed back each step; a batch runs until its longest row ends.

Our own loop instead of ``llm.generate``: it keeps a per-row random generator (so a seeded sample
does not depend on which other samples share its batch), honours the ``###`` stop string and EOS
per row without a tokenizer-aware stopping criterion, and is the same code on the CPU and on a GPU.
The stop bookkeeping (:func:`stop_tables`, :func:`find_stops`) and :class:`Decoded` are shared with
the static-cache loop (:mod:`modeling.static_decode`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from core.errors import ConfigError
from modeling.prompt import ANSWER_END
from modeling.sampling import GenerationConfig, pick_tokens

STOP_STRING = ANSWER_END  # "###": the trained answer ends with it
# Check "all rows done?" (a host sync) every few steps only, so the host can queue GPU work ahead.
CHECK_EVERY = 8


@dataclass(frozen=True)
class Stops:
    """How a row ends: at one of ``eos_ids``, or at the ``###`` stop string when ``tokenizer`` is given
    (tracked on the device, see :func:`stop_tables`); ``pad_id`` fills a row's steps after its end."""

    eos_ids: Sequence[int]
    pad_id: int
    tokenizer: Any = None


@dataclass
class Decoded:
    """One row's generated ids (stop token excluded) and why it stopped: eos, stop, length,
    prompt-too-long (nothing generated: the prompt is over the budget even with no subtitle), or
    cache-too-long (nothing generated: its prompt + budget exceed the static cache's length)."""

    tokens: list[int]
    finish: str
    subtitle_cut: int = 0  # subtitle tokens dropped to fit the prompt budget



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


@torch.inference_mode()
def decode(
    llm,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    stops: Stops,
    config: GenerationConfig | None = None,
    seeds: Sequence[int] | None = None,
    max_new: Sequence[int] | None = None,
) -> list[Decoded]:
    """Generate from left-padded ``embeds [B,T,H]``; each row stops at EOS, at ``###`` (``stops``) or at its length.

    Greedy unless ``config.do_sample``; then row ``i`` samples from its own generator seeded
    with ``seeds[i]`` (default 0), after the repetition penalty, temperature, top-k and top-p
    (transformers' order). ``max_new``: each row's new-token budget (default ``config.max_new_tokens``).
    """
    eos_ids, pad_id, tokenizer = stops.eos_ids, stops.pad_id, stops.tokenizer
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

