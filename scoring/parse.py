"""Emotion labels out of generated text.

Outputs in the trained template ("The character's emotional state is a, b, c.") are parsed
here without an LLM; anything else is free text and goes to ``LLMExtractor``, which asks a
local Qwen2.5-Instruct the reference's questions (``toolkit/utils/qwen.py``:
``reason_to_openset_qwen`` to list the emotions, ``openset_to_sentiment_qwen`` to map a list
to positive/negative/neutral).

Sentiment: the reference has no deterministic label-list -> sentiment rule (it always asks
the LLM, even for ``[]``), so neither do we; sentiment sets need ``LLMExtractor.to_sentiment``
unless the predictions already carry the sentiment word.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence
from core.errors import MissingFileError, ModelRefError

# "The character's emotional state is", tolerant of case, quoting, the possessive form,
# "states are" and a leading bracket/quote; anchored at the start so that a description
# mentioning someone's emotional state mid-sentence is not mistaken for the template.
_TEMPLATE = re.compile(
    r"""^[\s"'`\[(*]*(?:the\s+)?(?:main\s+)?(?:character|person|speaker|subject)"""
    r"""(?:'s|’s|s'|s’)?\s+"""
    r"""emotional\s+states?\s+(?:is|are)\s*:?\s*""",
    re.IGNORECASE,
)
_ITEM_SPLIT = re.compile(r"\s*(?:,|;|&|\band\b|\bor\b)\s*", re.IGNORECASE)
_STRIP = " \t\r\n\"'`[](){}.!?:;*"
MAX_WORDS_PER_LABEL = 4  # longer "labels" mean the text ran on: treat it as free text


def parse_template(text: str) -> list[str] | None:
    """Labels of a templated output, or None when ``text`` is free-form (then use the LLM path).

    Stops at ``###`` and at the end of the first sentence; strips quotes and brackets; splits
    on commas, semicolons and "and"; lower-cases. ``[]``/nothing after the template gives ``[]``.
    """
    if not isinstance(text, str):
        return None
    text = text.split("###", 1)[0]
    m = _TEMPLATE.match(text)
    if m is None:
        return None
    rest = text[m.end() :]
    # First sentence: a period (or newline) that ends it, not one inside a word.
    rest = re.split(r"(?<=[^\s.])\.(?=\s|$)|\n", rest, maxsplit=1)[0]
    labels = []
    for item in _ITEM_SPLIT.split(rest):
        item = item.strip(_STRIP).strip().lower()
        if not item:
            continue
        if len(item.split()) > MAX_WORDS_PER_LABEL:
            return None
        labels.append(item)
    return labels


def format_openset(labels: Sequence[str]) -> str:
    """``["happy", "sad"]`` -> ``"[happy, sad]"``, the list text the reference LLM produces."""
    return "[" + ", ".join(labels) + "]"


# The reference prompts, word for word (including the spaces its line continuations leave).
def openset_prompt(reason: str) -> str:
    """Prompt: list the emotions in a description (reference reason_to_openset_qwen)."""
    return (
        "Please assume the role of an expert in the field of emotions. "
        "We provide clues that may be related to the emotions of the characters. "
        "Based on the provided clues, please identify the emotional states of the main character. "
        "The main character is the one with the most detailed clues. "
        "Please separate different emotional categories with commas and output only the clearly "
        "identifiable emotional categories in a list format. "
        "If none are identified, please output an empty list. "
        "Input: We cannot recognize his emotional state; Output: [] "
        "Input: His emotional state is happy, sad, and angry; Output: [happy, sad, angry] "
        f"Input: {reason}; Output: "
    )


def sentiment_prompt(openset: str) -> str:
    """Prompt: emotion list -> positive/negative/neutral (openset_to_sentiment_qwen)."""
    indent = " " * 12
    parts = [
        "Please act as an expert in the field of emotions. ",
        "We provide a few words to describe the emotions of a character. ",
        "Please choose the most likely sentiment from the given candidates: "
        "[positive, negative, neutral] ",
        "Please direct output answer without analyzing process. ",
        "Input: [joyful]; Output: positive ",
        "Input: []; Output: neutral ",
        f"Input: {openset}; Output: ",
    ]
    return parts[0] + "".join(indent + p for p in parts[1:])


_PREFIXES = ("输入", "输出", "翻译", "让我们来翻译一下：", "output", "Output", "input", "Input")


def clean_response(text: str) -> str:
    """Reference answer clean-up (func_postprocess_qwen): drop an echoed "Output:", newlines."""
    text = text.strip()
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.strip()
    for colon in (":", "："):
        if text.startswith(colon):
            text = text[len(colon) :]
    return text.strip().replace("\n", "").strip()


class LLMExtractor:
    """Batched, left-padded greedy generation with a local Qwen2.5-Instruct checkpoint.

    The reference samples with vLLM (temperature 0.7, top-p 0.8, repetition penalty 1.05,
    512 new tokens); we decode greedily so that scores are reproducible, and keep
    the repetition penalty and token budget.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        batch_size: int = 16,
        max_new_tokens: int = 512,
        repetition_penalty: float = 1.05,
        device: str | None = None,
        dtype: str = "auto",
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model_path)
        if not path.is_dir():
            raise MissingFileError(f"extractor model folder {path} does not exist")
        if not (path / "config.json").is_file():
            raise ModelRefError(f"extractor {path} is not a Hugging Face model folder (no config.json)")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = (
            AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(self.device).eval()
        )
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """One cleaned answer per prompt, each asked as a single user turn of the chat template."""
        import torch

        answers: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            texts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in chunk
            ]
            enc = self.tokenizer(
                texts, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            with torch.inference_mode():
                out = self.model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    repetition_penalty=self.repetition_penalty,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            answers.extend(
                clean_response(t)
                for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            )
        return answers

    def to_openset(self, texts: Sequence[str]) -> list[str]:
        """Descriptions -> the LLM's emotion list as list text (read with ``parse_openset``)."""
        return self.generate([openset_prompt(t) for t in texts])

    def to_sentiment(self, opensets: Sequence[str]) -> list[str]:
        """Emotion lists (list text) -> the LLM's positive/negative/neutral answer, verbatim."""
        return self.generate([sentiment_prompt(o) for o in opensets])
