"""Generation for AffectGPT: features + subtitles + tasks -> texts, on either decode loop.

Two backends (``GenerationConfig.backend``), same tokens:

- ``hf``: :mod:`modeling.hf_decode`, the KV cache the model returns, fed back each step.
- ``static``: :mod:`modeling.static_decode`, a preallocated ``rows x length`` cache, a one-token
  step compiled once on CUDA, and in-flight refill (a stopped row's slot takes the next row).
  ``auto`` is static on CUDA and hf elsewhere (on the CPU the static step runs eager).

- :func:`generate` — AffectGPT features + subtitles + tasks -> cleaned texts.
- :func:`generate_raw` — the same, uncleaned, with each row's :class:`~modeling.hf_decode.Decoded`.
- :func:`clean_output` — the text after the assistant marker, cut at ``###`` / EOS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modeling.hf_decode import STOP_STRING, Decoded, Stops, decode, left_pad
from modeling.prompt import ASSISTANT_MARKER, MAX_NEW_TOKENS, QUESTION_TASK, FittedPrompt, fit_prompt, question_for
from modeling.sampling import GenerationConfig
from modeling.static_decode import static_decoder


def clean_output(text: str) -> str:
    """What follows the assistant marker, cut at the first ``###`` (as the released code did)."""
    marker = ASSISTANT_MARKER.strip()
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.split(STOP_STRING, 1)[0].strip()



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


def fit_prompts(model, subtitles: Sequence[str], questions: Sequence[str],
                config: GenerationConfig) -> list[FittedPrompt]:
    """Each row's prompt within ``config.max_prompt_tokens`` (only the subtitle is shortened)."""
    return [fit_prompt(model.tokenizer, s or "", q, model.spec.visual_stream, config.max_prompt_tokens)
            for s, q in zip(subtitles, questions, strict=True)]


def task_budget(task: str, config: GenerationConfig) -> int:
    """A row's new-token budget: ``config.max_new_tokens``, else its task's."""
    return config.max_new_tokens or MAX_NEW_TOKENS.get(task, MAX_NEW_TOKENS[QUESTION_TASK])


def decoding_record(config: GenerationConfig, decoding: str, dtype: str, seed: int, tasks: Sequence[str]) -> dict:
    """The exact settings rows are decoded with (an output's provenance): the resolved sampling values, each
    task's new-token budget, the prompt budget, the precision, the backend and the seed."""
    return {"decoding": decoding, "do_sample": config.do_sample, "temperature": config.temperature,
            "top_p": config.top_p, "top_k": config.top_k, "repetition_penalty": config.repetition_penalty,
            "max_new_tokens": {t: task_budget(t, config) for t in sorted(tasks)},
            "max_prompt_tokens": config.max_prompt_tokens, "dtype": dtype, "backend": config.backend, "seed": seed}


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
        kwargs = dict(stops=Stops(eos_ids_of(model), model.tokenizer.pad_token_id, model.tokenizer), config=cfg,
                      seeds=None if seeds is None else [seeds[i] for i in live],
                      max_new=budgets)
        if resolve_backend(cfg.backend, device) == "static":
            length = cfg.cache_tokens or cfg.max_prompt_tokens + max(budgets)
            out = static_decoder(model.llm, cfg.cache_rows, length).decode(embeds, mask, **kwargs)
        else:
            out = decode(model.llm, embeds, mask, **kwargs)
        for i, r in zip(live, out):
            r.subtitle_cut = fitted[i].subtitle_tokens - fitted[i].subtitle_kept
            rows[i] = r
    texts = [model.tokenizer.decode(r.tokens, skip_special_tokens=True) for r in rows]
    return texts, rows
