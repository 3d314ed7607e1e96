"""Emotion labels out of generated text.

Outputs in the trained template ("The character's emotional state is a, b, c.") are parsed
here without an LLM; anything else is free text and goes to ``LLMExtractor``, which asks a
local Qwen2.5-Instruct the reference's questions (``toolkit/utils/qwen.py``:
``reason_to_openset_qwen`` to list the emotions, ``openset_to_sentiment_qwen`` to map a list
to positive/negative/neutral).

A templated output whose items run on past ``MAX_WORDS_PER_LABEL`` words ("... is confused,
anxious, unable to make a decision.") keeps, from each long item, only the emotion words the
wheels know (`runon_labels`); `spot_emotions` does the same over any text, the deterministic
stand-in for the extractor that ``--extract rules`` asks for. Label lists become a sentiment in
``scoring.sentiment`` (rules) or with ``LLMExtractor.to_sentiment`` (the reference's way).
"""

from __future__ import annotations

import csv
import functools
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from core.errors import InputError, MissingFileError, ModelRefError

if TYPE_CHECKING:
    from scoring.wheel import EmotionWheel

# "The character's emotional state is", tolerant of case, quoting, the possessive form,
# "states are" and a leading bracket/quote; anchored at the start so that a description
# mentioning someone's emotional state mid-sentence is not mistaken for the template.
_TEMPLATE = re.compile(
    r"""^[\s"'`\[(*]*(?:the\s+)?(?:main\s+)?(?:character|person|speaker|subject)"""
    r"""(?:'s|’s|s'|s’)?\s+"""
    r"""emotional\s+states?\s+(?:is|are)\s*:?\s*""",
    re.IGNORECASE,
)
# No \s* around the separators: each item is stripped after the split, and "\s*" on both sides
# backtracks over every run of spaces from each of its positions (40k spaces took 48 s).
_ITEM_SPLIT = re.compile(r"(?:,|;|&|\band\b|\bor\b)", re.IGNORECASE)
_STRIP = " \t\r\n\"'`[](){}.!?:;*"
MAX_WORDS_PER_LABEL = 4  # a longer item means the output ran on (the reference would read it as text)


def template_items(text: str) -> list[str] | None:
    """Items of a templated output whatever their length, or None when ``text`` is free-form.

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
    items = []
    for item in _ITEM_SPLIT.split(rest):
        item = item.strip(_STRIP).strip().lower()
        if item:
            items.append(item)
    return items


def parse_template(text: str) -> list[str] | None:
    """Labels of a templated output, or None when ``text`` is free-form (then use the LLM path).

    `template_items`, refused (None) when an item runs past ``MAX_WORDS_PER_LABEL`` words: the
    reference's extractor would read such an output as text (`runon_labels` keeps its emotion words).
    """
    items = template_items(text)
    if items is None or any(len(item.split()) > MAX_WORDS_PER_LABEL for item in items):
        return None
    return items


SPOTTING_STOPWORDS_FILE = "spotting_stopwords.csv"
# A negator up to this many words before an emotion word makes it "not <word>".
NEGATION_WINDOW = 3
NEGATORS = frozenset({
    "not", "no", "never", "nor", "neither", "without", "hardly", "barely", "scarcely", "cannot",
    "can't", "isn't", "wasn't", "aren't", "weren't", "doesn't", "don't", "didn't", "won't",
})
_WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")
_MAX_NGRAM = 4  # the longest wheel forms ("at a loss for words") have 5 words; 4 covers all but that


@functools.lru_cache(maxsize=1)
def spotting_stopwords() -> frozenset[str]:
    """``scoring/spotting_stopwords.csv``: wheel forms that are ordinary words in running text."""
    path = Path(str(resources.files("scoring") / SPOTTING_STOPWORDS_FILE))
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != ["word", "why"]:
            raise InputError(f"{path}: expected columns word,why (has {reader.fieldnames})")
        return frozenset(row["word"].strip().lower() for row in reader if row["word"].strip())


def _is_emotion(words: str, wheel: "EmotionWheel") -> str | None:
    """``words`` as the wheel spells it when it maps onto some wheel's level-1 word, else None."""
    for form in dict.fromkeys((words, words.replace("'", "’"))):
        # The membership test first: map_label memoises every label it is asked about.
        if form in wheel.form2bases and any(wheel.map_label(form, k) for k in range(1, wheel.n_wheels + 1)):
            return form
    return None


def spot_emotions(text: str, wheel: "EmotionWheel") -> list[str]:
    """The emotion words of running text, in order, each once.

    At each word, the longest run of up to four words that maps onto at least one wheel (and is
    not in ``spotting_stopwords``) is kept; a negator within ``NEGATION_WINDOW`` words before it,
    with no emotion word between, keeps it as "not <words>".
    """
    if not isinstance(text, str):
        return []
    tokens = _WORD.findall(text.lower().replace("’", "'"))
    stop = spotting_stopwords()
    found: list[str] = []
    last_end = 0  # end of the previous emotion word: a negator before it does not reach past it
    i = 0
    while i < len(tokens):
        for n in range(min(_MAX_NGRAM, len(tokens) - i), 0, -1):
            words = " ".join(tokens[i : i + n])
            form = None if words in stop else _is_emotion(words, wheel)
            if form is not None:
                negated = any(t in NEGATORS for t in tokens[max(last_end, i - NEGATION_WINDOW) : i])
                label = f"not {form}" if negated else form
                if label not in found:
                    found.append(label)
                i += n
                last_end = i
                break
        else:
            i += 1
    return found


def runon_labels(text: str, wheel: "EmotionWheel") -> tuple[list[str], int] | None:
    """Labels of a templated output whose long items are cut to their emotion words, and how
    many items were cut; None when ``text`` is not templated."""
    items = template_items(text)
    if items is None:
        return None
    labels: list[str] = []
    cut = 0
    for item in items:
        if len(item.split()) > MAX_WORDS_PER_LABEL:
            cut += 1
            labels.extend(w for w in spot_emotions(item, wheel) if w not in labels)
        elif item not in labels:
            labels.append(item)
    return labels, cut


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
