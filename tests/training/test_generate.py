"""Batched generation: left padding equals batch size 1, stop strings and EOS, seeded sampling."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from training.generate import (GenerationConfig, clean_output, decode, generate, generate_raw, left_pad,
                                sample_seed)


SUBTITLES = ["hello there", "", "a much longer subtitle with many more words in it " * 3, "ok", "why not", "x y z"]
TASKS = ["ov", "description", "ov", "description", "ov", "description"]


def _features(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, 768, generator=g), torch.randn(n, 8, 64, generator=g)


def test_left_pad_right_aligns_rows():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_clean_output_cuts_at_the_marker_and_stop_string():
    assert clean_output(" The character's emotional state is happy.###junk") == "The character's emotional state is happy."
    assert clean_output("###Human: hi ###Assistant: sad, tired ### more") == "sad, tired"


def test_sample_seed_is_a_pure_function():
    assert sample_seed(42, "a", "ov") == sample_seed(42, "a", "ov")
    assert len({sample_seed(42, "a", "ov"), sample_seed(42, "a", "description"), sample_seed(43, "a", "ov")}) == 3


def test_batched_left_padded_greedy_equals_batch_size_one(tiny_model, one_thread):
    visual, audio = _features(len(SUBTITLES))
    cfg = GenerationConfig(max_new_tokens=12)
    _, batched = generate_raw(tiny_model, visual, audio, SUBTITLES, TASKS, cfg)
    for i in range(len(SUBTITLES)):
        _, single = generate_raw(tiny_model, visual[i:i + 1], audio[i:i + 1], SUBTITLES[i:i + 1], TASKS[i:i + 1], cfg)
        assert single[0].tokens == batched[i].tokens, i
    assert all(len(r.tokens) > 0 for r in batched)


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(tiny_model, one_thread):
    visual, audio = _features(len(SUBTITLES))
    cfg = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=1.0, top_p=0.9)
    seeds = [sample_seed(7, f"s{i}", t) for i, t in enumerate(TASKS)]
    a = generate(tiny_model, visual, audio, SUBTITLES, TASKS, cfg, seeds)
    b = generate(tiny_model, visual, audio, SUBTITLES, TASKS, cfg, seeds)
    assert a == b
    part = generate(tiny_model, visual[:3], audio[:3], SUBTITLES[:3], TASKS[:3], cfg, seeds[:3])
    assert part == a[:3]
    other = generate(tiny_model, visual, audio, SUBTITLES, TASKS, cfg, [s + 1 for s in seeds])
    assert other != a
    greedy = generate(tiny_model, visual, audio, SUBTITLES, TASKS, GenerationConfig(max_new_tokens=12))
    assert greedy != a


class ScriptedLM(torch.nn.Module):
    """A causal-LM stand-in that emits a fixed token script per row (one step per forward call)."""

    def __init__(self, scripts: list[list[int]], vocab: int):
        super().__init__()
        self.scripts, self.vocab, self.calls = scripts, vocab, 0
        self.embed = torch.nn.Embedding(vocab, 4)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, inputs_embeds=None, attention_mask=None, position_ids=None, cache=None, use_cache=None,
                logits_to_keep=0, **kwargs):
        assert attention_mask.shape[1] == (cache or 0) + inputs_embeds.shape[1]  # the mask grows by one per step
        logits = torch.full((len(self.scripts), 1, self.vocab), -1e9)
        for i, script in enumerate(self.scripts):
            logits[i, 0, script[min(self.calls, len(script) - 1)]] = 0.0
        self.calls += 1
        return SimpleNamespace(logits=logits, cache=attention_mask.shape[1])


def test_rows_stop_at_the_stop_string_at_eos_or_at_the_length(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models["llm"]))
    eos = tok.eos_token_id
    happy = tok("The character's emotional state is happy.###", add_special_tokens=False)["input_ids"]
    sad = tok("sad", add_special_tokens=False)["input_ids"]
    filler = tok(" and", add_special_tokens=False)["input_ids"]
    hash_id = tok.convert_tokens_to_ids("#")
    split = sad + [hash_id, hash_id] + filler + [hash_id] * 3  # "##" then a word: only the later "###" stops
    scripts = [happy + filler * 20, sad + [eos] + filler * 20, filler * 40, split + filler * 20]
    lm = ScriptedLM(scripts, vocab=len(tok))
    embeds = torch.zeros(4, 5, 4)
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    rows = decode(lm, embeds, mask, eos_ids=[eos], pad_id=eos, config=GenerationConfig(max_new_tokens=10),
                  tokenizer=tok)
    assert [r.finish for r in rows] == ["stop", "eos", "length", "stop"]
    assert rows[3].tokens == split and clean_output(tok.decode(split)) == "sad##" + tok.decode(filler)
    assert clean_output(tok.decode(rows[0].tokens)) == "The character's emotional state is happy."
    assert rows[0].tokens == happy  # nothing generated after the stop string
    assert rows[1].tokens == sad  # EOS itself is not part of the output
    assert len(rows[2].tokens) == 10


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(top_p=0.0), dict(do_sample=True, temperature=0.0)])
def test_bad_generation_settings_are_refused(bad):
    with pytest.raises(ValueError):
        GenerationConfig(**bad).validate()
