"""The AffectGPT prompt, tasks and targets, as pure functions shared with inference.

Everything here is text in, text or token ids out: no model, no Ray. Training builds
``prompt + answer###<eos>`` with :func:`encode_example`; inference builds the same prompt
with :func:`fit_prompt` and generates from it, so the two can never drift apart.

Length rules (ours; the released code cut whole sequences, which could cut the answer or a
placeholder): in training, when ``prompt + answer`` is longer than ``max_tokens``, the
**subtitle** is shortened (its longest token prefix that fits is kept); the placeholders, the
question and the answer are never cut, and if even an empty subtitle does not fit, the answer's
tail is cut, its last token always EOS. In inference the prompt has a budget of its own
(:data:`MAX_PROMPT_TOKENS`, whatever the answer's), again met by shortening only the subtitle
(:func:`fit_prompt`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.errors import InputError

Task = Literal["description", "ov"]
VisualStream = Literal["face", "frame"]

MULTI_TOKEN = "<MultiHere>"
AUDIO_TOKEN = "<AudioHere>"
FACE_TOKEN = "<FaceHere>"
FRAME_TOKEN = "<FrameHere>"
# Added to the tokenizer as special tokens, in this order (their ids follow the base vocab).
PLACEHOLDER_TOKENS = (MULTI_TOKEN, AUDIO_TOKEN, FACE_TOKEN, FRAME_TOKEN)

# The released model's task questions. MER-Caption+ trained the first two; the release asks the
# others of its sentiment and discrete-emotion sets.
QUESTIONS: dict[str, str] = {
    "description": "Please infer the person's emotional state and provide your reasoning process.",
    "ov": "Please recognize all possible emotional states of the character.",
    "sentiment": "Please select the most likely sentiment label that can best describe the person's emotional "
                 "state: positive, negative, neutral.",
}
# Closed-set labels over the candidates given (``--labels``), joined with "," and no space as the release
# joins its candidates; and valence over a range, whose ends the release prints as Python floats ("-3.0",
# not "-3"). The release writes "ﬂoating-point" with the U+FB02 ligature; kept, so that the prompt is the
# released one.
CLOSED_QUESTION = ("Please select the label that can best describe the person's emotional state from the "
                   "provided candidate labels: {labels}.")
CLOSED_SEPARATOR = ","
VALENCE_QUESTION = ("Please identify the overall positive or negative emotional polarity of the main characters. "
                    "The output should be a \ufb02oating-point number ranging from {low} to {high}. "
                    "Here, {low} indicates extremely negative emotions, 0 indicates neutral emotions, and "
                    "{high} indicates extremely positive emotions. "
                    "Please provide your judgment as a \ufb02oating-point number.")
# Named tasks, and the task name of a row that asks the user's own question.
TASKS = ("ov", "description", "sentiment", "valence", "closed")
QUESTION_TASK = "question"
# New-token budgets by task: the labels are one short sentence, a description runs long (the
# release allows 1,200 new tokens for everything).
MAX_NEW_TOKENS = {"ov": 64, "sentiment": 32, "valence": 32, "closed": 32, "description": 1200,
                  QUESTION_TASK: 1200}
# Prompt budget, independent of the answer's: the release generates within 2,000 tokens and up to
# 1,200 new ones, so its prompt keeps at most 800 (it cuts from the left; we shorten only the subtitle).
MAX_PROMPT_TOKENS = 800
OV_ANSWER = "The character's emotional state is {labels}."
ANSWER_END = "###"  # the target is `answer###` then EOS
ASSISTANT_MARKER = "###Assistant: "

_PROMPT = (
    "###Human: The audio and video merged info is: <Multi>" + MULTI_TOKEN + "</Multi>. "
    "The audio content is as follows: <Audio>" + AUDIO_TOKEN + "</Audio>. "
    "Meanwhile, we uniformly sample raw frames from the video{visual}. "
    "The subtitle of this video is: <Subtitle>{subtitle}</Subtitle>. "
    "Now, please answer my question based on all the provided information. {question} "
    + ASSISTANT_MARKER
)
_VISUAL = {
    "face": " and extract faces from these frames: <Video>" + FACE_TOKEN + "</Video>",
    "frame": ": <Video>" + FRAME_TOKEN + "</Video>",
}


def visual_token(visual: VisualStream) -> str:
    """The placeholder that receives the visual token for this stream."""
    return FACE_TOKEN if visual == "face" else FRAME_TOKEN


def strip_placeholders(text: str) -> str:
    """``text`` without the placeholder strings: in a subtitle or question they would tokenize to the
    placeholder ids, and a prompt must hold each exactly once (where the features go)."""
    for token in PLACEHOLDER_TOKENS:
        text = text.replace(token, "")
    return text


def build_prompt(subtitle: str, question: str, visual: VisualStream = "face") -> str:
    """The released model's exact prompt (no chat template), ending with ``###Assistant: ``."""
    if visual not in _VISUAL:
        raise ValueError(f"visual stream must be 'face' or 'frame', got {visual!r}")
    return _PROMPT.format(visual=_VISUAL[visual], subtitle=strip_placeholders(subtitle or ""),
                          question=strip_placeholders(question))


def question_for(task: str, labels: Sequence[str] = (), valence_range: tuple[float, float] = (-1.0, 1.0)) -> str:
    """The released question of a named task; ``closed`` needs the candidate ``labels``."""
    if task in QUESTIONS:
        return QUESTIONS[task]
    if task == "valence":
        low, high = valence_range
        if not low < 0 < high:
            raise InputError(f"valence range must be low < 0 < high, got {valence_range}")
        return VALENCE_QUESTION.format(low=float(low), high=float(high))
    if task == "closed":
        words = [w.strip() for w in labels if w and w.strip()]
        if len(words) < 2:
            raise InputError(f"the closed-set task needs at least two candidate labels, got {list(labels)}")
        return CLOSED_QUESTION.format(labels=CLOSED_SEPARATOR.join(words))
    raise InputError(f"unknown task {task!r} (known: {', '.join(TASKS)}; or ask your own question)")


def ov_answer(labels: Sequence[str] | None) -> str:
    """``The character's emotional state is a, b, c.``; an empty list means neutral."""
    words = [w.strip() for w in (labels or []) if w and w.strip()]
    return OV_ANSWER.format(labels=", ".join(words) if words else "neutral")


def draw_task(seed: int, epoch: int, index: int, has_reason: bool, description_prob: float = 0.5) -> Task:
    """The task of sample ``index`` in ``epoch``: a pure function of (seed, epoch, index).

    A sample without a reason always gets the OV-label task. Hash-based so it is the same on
    every worker and after a resume, whatever the sharding.
    """
    if not has_reason:
        return "ov"
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64
    return "description" if u < description_prob else "ov"


def task_answer(task: Task, labels: Sequence[str] | None, reason: str | None) -> str:
    """The answer text of a task (without the ``###`` end marker)."""
    if task == "description":
        if not reason:
            raise ValueError("the description task needs a reason")
        return reason.strip()
    return ov_answer(labels)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _fit_subtitle(tokenizer, subtitle: str, question: str, visual: VisualStream, budget: int) -> list[int]:
    """Prompt ids whose subtitle is the longest token prefix of ``subtitle`` within ``budget``."""
    subtitle = strip_placeholders(subtitle)
    ids = _ids(tokenizer, build_prompt(subtitle, question, visual))
    if len(ids) <= budget:
        return ids
    sub_ids = _ids(tokenizer, subtitle)
    lo, hi = 0, len(sub_ids)  # invariant: lo tokens fit (checked below for 0), hi do not
    best = _ids(tokenizer, build_prompt("", question, visual))
    if len(best) > budget:
        return best
    while hi - lo > 1:
        mid = (lo + hi) // 2
        cand = _ids(tokenizer, build_prompt(tokenizer.decode(sub_ids[:mid]), question, visual))
        if len(cand) <= budget:
            lo, best = mid, cand
        else:
            hi = mid
    return best


@dataclass(frozen=True)
class FittedPrompt:
    """Prompt ids within a budget, and what it cost the subtitle."""

    ids: list[int]
    subtitle_tokens: int  # the subtitle's tokens
    subtitle_kept: int  # of which the prompt keeps this many (a prefix)
    fits: bool  # False: even with no subtitle the prompt is over the budget (``ids`` is then that prompt)

    @property
    def shortened(self) -> bool:
        return self.subtitle_kept < self.subtitle_tokens


def fit_prompt(tokenizer, subtitle: str, question: str, visual: VisualStream = "face",
               max_tokens: int = MAX_PROMPT_TOKENS) -> FittedPrompt:
    """The prompt of ``(subtitle, question)`` within ``max_tokens``, shortening only the subtitle."""
    subtitle = strip_placeholders(subtitle or "")
    ids = _ids(tokenizer, build_prompt(subtitle, question, visual))
    total = len(_ids(tokenizer, subtitle)) if subtitle else 0
    if len(ids) <= max_tokens:
        return FittedPrompt(ids, total, total, True)
    fitted = _fit_subtitle(tokenizer, subtitle, question, visual, max_tokens)
    bare = len(_ids(tokenizer, build_prompt("", question, visual)))
    if len(fitted) > max_tokens:
        return FittedPrompt(fitted, total, 0, False)
    # The kept prefix's length: the fitted prompt's extra tokens over the bare one (BPE merges at
    # the subtitle's edges can shift this by a token; it is a count for the summary, not an index).
    return FittedPrompt(fitted, total, min(max(len(fitted) - bare, 0), total - 1), True)


def encode_prompt(
    tokenizer, subtitle: str, question: str, visual: VisualStream = "face", max_tokens: int = 1024,
    reserve: int = 0,
) -> list[int]:
    """Prompt token ids (no BOS), the subtitle shortened so that ``reserve`` more tokens fit."""
    return _fit_subtitle(tokenizer, subtitle, question, visual, max_tokens - reserve)


def encode_example(
    tokenizer,
    subtitle: str,
    question: str,
    answer: str,
    visual: VisualStream = "face",
    max_tokens: int = 1024,
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for ``prompt + answer### + EOS``; labels are -100 on the prompt.

    Prompt and answer are tokenized separately (as the released code did) so that the prompt
    ids equal what inference feeds the model.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token")
    answer_ids = _ids(tokenizer, answer + ANSWER_END) + [eos]
    prompt_ids = _fit_subtitle(tokenizer, subtitle, question, visual, max_tokens - len(answer_ids))
    room = max_tokens - len(prompt_ids)
    if len(answer_ids) > room:
        answer_ids = answer_ids[: max(room - 1, 0)] + [eos]
    input_ids = prompt_ids + answer_ids
    labels = [-100] * len(prompt_ids) + answer_ids
    return input_ids, labels
