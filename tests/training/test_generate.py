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


def test_each_row_stops_at_its_own_budget(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models["llm"]))
    filler = tok(" and", add_special_tokens=False)["input_ids"]
    lm = ScriptedLM([filler * 40] * 3, vocab=len(tok))
    rows = decode(lm, torch.zeros(3, 2, 4), torch.ones(3, 2, dtype=torch.long), eos_ids=[tok.eos_token_id],
                  pad_id=tok.eos_token_id, config=GenerationConfig(), tokenizer=tok, max_new=[3, 9, 1])
    assert [len(r.tokens) for r in rows] == [3, 9, 1] and {r.finish for r in rows} == {"length"}
    with pytest.raises(ValueError, match="one budget >= 1 per row"):
        decode(lm, torch.zeros(3, 2, 4), torch.ones(3, 2, dtype=torch.long), eos_ids=[0], pad_id=0,
               config=GenerationConfig(), max_new=[3, 0, 1])


def test_the_prompt_budget_does_not_depend_on_the_answer_budget(tiny_model, one_thread):
    """At the released 1,200 new tokens the subtitle stays whole; only an over-long one is shortened."""
    from training.generate import fit_prompts
    from training.prompt import MAX_PROMPT_TOKENS, QUESTIONS

    subtitle = "I really did not expect to see you here today, it is such a surprise. " * 4
    long = "word " * 3000
    for max_new in (64, 1200):
        cfg = GenerationConfig(max_new_tokens=max_new)
        kept, cut = fit_prompts(tiny_model, [subtitle, long], [QUESTIONS["description"]] * 2, cfg)
        assert kept.fits and not kept.shortened and kept.subtitle_kept == kept.subtitle_tokens > 40
        assert cut.fits and cut.shortened and len(cut.ids) <= MAX_PROMPT_TOKENS < cut.subtitle_tokens
    visual, audio = _features(2)
    _, rows = generate_raw(tiny_model, visual, audio, [subtitle, long], ["ov", "ov"], GenerationConfig(max_new_tokens=4))
    assert rows[0].subtitle_cut == 0 and rows[1].subtitle_cut > 2000 and all(len(r.tokens) == 4 for r in rows)


def test_a_prompt_that_cannot_fit_generates_nothing_and_spares_its_batch(tiny_model, one_thread):
    from training.prompt import QUESTIONS

    visual, audio = _features(3)
    cfg = GenerationConfig(max_new_tokens=5, max_prompt_tokens=200)
    huge = "Please describe everything. " * 100
    texts, rows = generate_raw(tiny_model, visual, audio, ["hi", "hi", "hi"], ["ov", "question", "ov"], cfg,
                               questions=[QUESTIONS["ov"], huge, QUESTIONS["ov"]])
    assert [r.finish for r in rows][1] == "prompt-too-long" and rows[1].tokens == [] and texts[1] == ""
    alone, _ = generate_raw(tiny_model, visual[[0, 2]], audio[[0, 2]], ["hi", "hi"], ["ov", "ov"], cfg)
    assert [texts[0], texts[2]] == alone


def test_task_budgets_and_questions(tiny_model, one_thread):
    from training.prompt import MAX_NEW_TOKENS, question_for

    assert MAX_NEW_TOKENS["ov"] < 100 and MAX_NEW_TOKENS["description"] == 1200
    visual, audio = _features(2)
    # Budgets per row when max_new_tokens is unset: checked on a scripted LM above; here the tasks'
    # questions reach the prompt (a different question, a different greedy answer).
    a = generate(tiny_model, visual, audio, ["x", "x"], ["sentiment", "valence"], GenerationConfig(max_new_tokens=6),
                 questions=[question_for("sentiment"), question_for("valence", valence_range=(-3, 3))])
    b = generate(tiny_model, visual, audio, ["x", "x"], ["ov", "ov"], GenerationConfig(max_new_tokens=6))
    assert a != b
    assert "from -3 to 3" in question_for("valence", valence_range=(-3, 3))
    assert question_for("closed", ["happy", "sad", "angry"]).endswith("candidate labels: happy, sad, angry.")
    with pytest.raises(ValueError, match="at least two candidate labels"):
        question_for("closed", ["happy"])
    with pytest.raises(ValueError, match="unknown task 'joy'"):
        question_for("joy")


def test_released_decoding_reads_the_llms_generation_config_and_repeats_with_a_seed(tiny_model, one_thread):
    from transformers import GenerationConfig as HFGenerationConfig

    from training.generate import HF_DEFAULT_TOP_K, released_config

    cfg = released_config(tiny_model.llm)
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.max_new_tokens) == (True, 1.0, 0.9, 1200)
    assert (cfg.top_k, cfg.repetition_penalty) == (HF_DEFAULT_TOP_K, 1.0)  # the tiny LLM sets neither
    qwen = SimpleNamespace(generation_config=HFGenerationConfig(top_k=20, repetition_penalty=1.05, top_p=0.8,
                                                                temperature=0.7))
    assert (released_config(qwen).top_k, released_config(qwen).repetition_penalty) == (20, 1.05)
    assert released_config(qwen).temperature == 1.0 and released_config(qwen).top_p == 0.9
    visual, audio = _features(len(SUBTITLES))
    short = GenerationConfig(**{**cfg.__dict__, "max_new_tokens": 10, "repetition_penalty": 1.05, "top_k": 20})
    seeds = [sample_seed(42, f"s{i}", t) for i, t in enumerate(TASKS)]
    first = generate(tiny_model, visual, audio, SUBTITLES, TASKS, short, seeds)
    assert first == generate(tiny_model, visual, audio, SUBTITLES, TASKS, short, seeds)


def test_top_k_one_is_greedy_and_a_huge_repetition_penalty_never_repeats(tiny_model, one_thread):
    visual, audio = _features(len(SUBTITLES))
    greedy = generate_raw(tiny_model, visual, audio, SUBTITLES, TASKS, GenerationConfig(max_new_tokens=10))[1]
    top1 = generate_raw(tiny_model, visual, audio, SUBTITLES, TASKS,
                        GenerationConfig(max_new_tokens=10, do_sample=True, top_k=1), [1] * len(TASKS))[1]
    assert [r.tokens for r in top1] == [r.tokens for r in greedy]
    unique = generate_raw(tiny_model, visual, audio, SUBTITLES, TASKS,
                          GenerationConfig(max_new_tokens=12, repetition_penalty=1e6))[1]
    assert all(len(set(r.tokens)) == len(r.tokens) for r in unique)
    assert any(len(set(r.tokens)) < len(r.tokens) for r in greedy)  # without it the tiny model repeats
