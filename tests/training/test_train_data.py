"""Prompt, task draw, truncation, collate, sharding order, optimizer groups and the LR schedule."""

from __future__ import annotations

import pytest
import torch

from modeling.prompt import QUESTIONS, build_prompt, draw_task, encode_example, ov_answer
from synth.features import SyntheticFeatures
from training.data import Collator, PromptDataset, epoch_order
from training.loop import lr_factor, optimizer_groups, steps_plan

RELEASED_PROMPT = (
    "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. The audio content is as "
    "follows: <Audio><AudioHere></Audio>. Meanwhile, we uniformly sample raw frames from the video and "
    "extract faces from these frames: <Video><FaceHere></Video>. The subtitle of this video is: "
    "<Subtitle>{subtitle}</Subtitle>. Now, please answer my question based on all the provided "
    "information. {question} ###Assistant: "
)


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from modeling.model import _load_base

    return _load_base(tiny_models["llm"], torch.float32)[1]


def test_prompt_is_the_released_text():
    q = QUESTIONS["ov"]
    assert build_prompt("Hi there.", q) == RELEASED_PROMPT.format(subtitle="Hi there.", question=q)
    frame = build_prompt("Hi.", q, "frame")
    assert "from the video: <Video><FrameHere></Video>. The subtitle" in frame and "<FaceHere>" not in frame
    assert QUESTIONS["description"] == "Please infer the person's emotional state and provide your reasoning process."
    assert q == "Please recognize all possible emotional states of the character."


def test_ov_answer_and_neutral():
    assert ov_answer(["happy", "relaxed"]) == "The character's emotional state is happy, relaxed."
    assert ov_answer([]) == ov_answer(None) == "The character's emotional state is neutral."


def test_task_draw_is_seeded_and_mixed():
    draws = [draw_task(42, 0, i, True) for i in range(400)]
    assert draws == [draw_task(42, 0, i, True) for i in range(400)]
    assert 150 < draws.count("description") < 250
    assert draws != [draw_task(42, 1, i, True) for i in range(400)]  # a new draw each epoch
    assert all(draw_task(42, e, i, False) == "ov" for e in range(3) for i in range(50))


def test_long_subtitle_is_cut_never_the_answer(tokenizer):
    answer = "The character's emotional state is happy, relaxed."
    short_ids, _ = encode_example(tokenizer, "fine", QUESTIONS["ov"], answer, max_tokens=1024)
    ids, labels = encode_example(tokenizer, "blah " * 3000, QUESTIONS["ov"], answer, max_tokens=256)
    assert len(ids) <= 256 and len(ids) > 200  # the subtitle filled what was left
    target = [t for t in labels if t != -100]
    assert tokenizer.decode(target) == answer + "###" + tokenizer.eos_token
    text = tokenizer.decode(ids)
    for piece in ("<MultiHere>", "<AudioHere>", "<FaceHere>", "</Subtitle>", QUESTIONS["ov"], "###Assistant: "):
        assert piece in text
    assert len(short_ids) < 256


def test_collate_pads_with_eos_and_masks(tokenizer):
    data = PromptDataset(SyntheticFeatures(4, 16, 8), tokenizer, seed=0, description_prob=0.5)
    items = [data[i] for i in range(4)]
    batch = Collator(tokenizer.eos_token_id)(items)
    width = max(len(i["input_ids"]) for i in items)
    assert batch["input_ids"].shape == (4, width) and batch["visual"].shape == (4, 8, 16)
    for row, item in enumerate(items):
        k = len(item["input_ids"])
        assert batch["attention_mask"][row].sum() == k
        assert (batch["input_ids"][row, k:] == tokenizer.eos_token_id).all()
        assert (batch["labels"][row, k:] == -100).all()


def test_shards_partition_each_global_batch():
    one = epoch_order(16, seed=3, epoch=1)
    two = [epoch_order(16, 3, 1, r, 2) for r in range(2)]
    assert sorted(one) == list(range(16)) and sorted(two[0] + two[1]) == list(range(16))
    # Global batch s of size 4 (micro 1): one process reads one[4s:4s+4]; two ranks read 2 each.
    for s in range(4):
        assert set(one[4 * s : 4 * s + 4]) == set(two[0][2 * s : 2 * s + 2] + two[1][2 * s : 2 * s + 2])
    assert epoch_order(16, 3, 2) != one


def test_decay_groups():
    model = torch.nn.ModuleDict({"lin": torch.nn.Linear(4, 4), "norm": torch.nn.LayerNorm(4)})
    model["norm"].weight.requires_grad_(True)
    decay, no_decay = optimizer_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3  # linear bias, norm weight and bias


def test_lr_schedule_defaults_are_constant():
    assert all(lr_factor(s, 0, 1000, 1.0) == 1.0 for s in range(0, 1000, 37))
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1) and lr_factor(9, 10, 100, 0.1) == 1.0
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert 0.1 < lr_factor(55, 10, 100, 0.1) < 1.0


def test_steps_plan():
    from core.config import load_config

    cfg = load_config(
        None, ["train.global_batch_size=8", "train.micro_batch_size=2", "train.workers=2", "train.epochs=3"]
    )
    assert steps_plan(35, cfg.train, 2) == (2, 4, 12)
    with pytest.raises(Exception, match="multiple"):
        load_config(None, ["train.global_batch_size=6", "train.micro_batch_size=4"])
