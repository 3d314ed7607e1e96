"""The AffectGPT prompt, tasks and targets, as pure functions shared with inference.

Everything here is text in, text or token ids out: no model, no Ray. Training builds
``prompt + answer###<eos>`` with :func:`encode_example`; inference builds the same prompt
with :func:`encode_prompt` and generates from it, so the two can never drift apart.

Length rule (our choice; the released code cut the whole sequence at 1,024 tokens, which
could cut the answer or a placeholder): when ``prompt + answer`` is longer than
``max_tokens``, the **subtitle** is shortened (its longest token prefix that fits is kept).
The placeholders, the question and the answer are never cut. If even an empty subtitle does
not fit, the answer's tail is cut, but its last token is always EOS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

Task = Literal["description", "ov"]
VisualStream = Literal["face", "frame"]

MULTI_TOKEN = "<MultiHere>"
AUDIO_TOKEN = "<AudioHere>"
FACE_TOKEN = "<FaceHere>"
FRAME_TOKEN = "<FrameHere>"
# Added to the tokenizer as special tokens, in this order (their ids follow the base vocab).
PLACEHOLDER_TOKENS = (MULTI_TOKEN, AUDIO_TOKEN, FACE_TOKEN, FRAME_TOKEN)

QUESTIONS: dict[str, str] = {
    "description": "Please infer the person's emotional state and provide your reasoning process.",
    "ov": "Please recognize all possible emotional states of the character.",
}
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


def build_prompt(subtitle: str, question: str, visual: VisualStream = "face") -> str:
    """The released model's exact prompt (no chat template), ending with ``###Assistant: ``."""
    if visual not in _VISUAL:
        raise ValueError(f"visual stream must be 'face' or 'frame', got {visual!r}")
    return _PROMPT.format(visual=_VISUAL[visual], subtitle=subtitle or "", question=question)


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
