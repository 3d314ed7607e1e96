"""Batched generation: left padding equals batch size 1, stop strings and EOS, seeded sampling."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from modeling.generate import clean_output, generate, generate_raw
from modeling.hf_decode import Stops, decode, left_pad
from modeling.sampling import GenerationConfig, sample_seed

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
    assert (
        clean_output(" The character's emotional state is happy.###junk") == "The character's emotional state is happy."
    )
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
    rows = decode(lm, embeds, mask, stops=Stops([eos], eos, tok), config=GenerationConfig(max_new_tokens=10))
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
    rows = decode(lm, torch.zeros(3, 2, 4), torch.ones(3, 2, dtype=torch.long),
                  stops=Stops([tok.eos_token_id], tok.eos_token_id, tok), config=GenerationConfig(), max_new=[3, 9, 1])
    assert [len(r.tokens) for r in rows] == [3, 9, 1] and {r.finish for r in rows} == {"length"}
    with pytest.raises(ValueError, match="one budget >= 1 per row"):
        decode(lm, torch.zeros(3, 2, 4), torch.ones(3, 2, dtype=torch.long), stops=Stops([0], 0),
               config=GenerationConfig(), max_new=[3, 0, 1])


def test_the_prompt_budget_does_not_depend_on_the_answer_budget(tiny_model, one_thread):
    """At the released 1,200 new tokens the subtitle stays whole; only an over-long one is shortened."""
    from modeling.generate import fit_prompts
    from modeling.prompt import MAX_PROMPT_TOKENS, QUESTIONS

    subtitle = "I really did not expect to see you here today, it is such a surprise. " * 4
    long = "word " * 3000
    for max_new in (64, 1200):
        cfg = GenerationConfig(max_new_tokens=max_new)
        kept, cut = fit_prompts(tiny_model, [subtitle, long], [QUESTIONS["description"]] * 2, cfg)
        assert kept.fits and not kept.shortened and kept.subtitle_kept == kept.subtitle_tokens > 40
        assert cut.fits and cut.shortened and len(cut.ids) <= MAX_PROMPT_TOKENS < cut.subtitle_tokens
    visual, audio = _features(2)
    _, rows = generate_raw(
        tiny_model, visual, audio, [subtitle, long], ["ov", "ov"], GenerationConfig(max_new_tokens=4)
    )
    assert rows[0].subtitle_cut == 0 and rows[1].subtitle_cut > 2000 and all(len(r.tokens) == 4 for r in rows)


def test_a_prompt_that_cannot_fit_generates_nothing_and_spares_its_batch(tiny_model, one_thread):
    from modeling.prompt import QUESTIONS

    visual, audio = _features(3)
    cfg = GenerationConfig(max_new_tokens=5, max_prompt_tokens=200)
    huge = "Please describe everything. " * 100
    texts, rows = generate_raw(tiny_model, visual, audio, ["hi", "hi", "hi"], ["ov", "question", "ov"], cfg,
                               questions=[QUESTIONS["ov"], huge, QUESTIONS["ov"]])
    assert [r.finish for r in rows][1] == "prompt-too-long" and rows[1].tokens == [] and texts[1] == ""
    alone, _ = generate_raw(tiny_model, visual[[0, 2]], audio[[0, 2]], ["hi", "hi"], ["ov", "ov"], cfg)
    assert [texts[0], texts[2]] == alone


def test_task_budgets_and_questions(tiny_model, one_thread):
    from modeling.prompt import MAX_NEW_TOKENS, question_for

    assert MAX_NEW_TOKENS["ov"] < 100 and MAX_NEW_TOKENS["description"] == 1200
    visual, audio = _features(2)
    # Budgets per row when max_new_tokens is unset: checked on a scripted LM above; here the tasks'
    # questions reach the prompt (a different question, a different greedy answer).
    a = generate(tiny_model, visual, audio, ["x", "x"], ["sentiment", "valence"], GenerationConfig(max_new_tokens=6),
                 questions=[question_for("sentiment"), question_for("valence", valence_range=(-3, 3))])
    b = generate(tiny_model, visual, audio, ["x", "x"], ["ov", "ov"], GenerationConfig(max_new_tokens=6))
    assert a != b
    with pytest.raises(ValueError, match="at least two candidate labels"):
        question_for("closed", ["happy"])
    with pytest.raises(ValueError, match="unknown task 'joy'"):
        question_for("joy")


def test_released_decoding_is_what_the_releases_generate_call_received(tiny_model, one_thread):
    """The release's ``Chat.answer_sample`` passes temperature, top-p and repetition_penalty to ``generate``
    (my_affectgpt/conversation/conversation_video.py lines 200-201 defaults, passed at lines 259-271), and its
    inference scripts call it with ``num_beams=1, temperature=1, do_sample=True, top_p=0.9, max_new_tokens=1200``
    (inference_hybird.py lines 262-264, inference_sample.py lines 219-221), leaving repetition_penalty at the
    default 1.0. A value passed to ``generate`` beats the LLM's ``generation_config``; top_k is never passed,
    so it comes from there (Qwen2.5-7B-Instruct's generation_config.json: top_k 20, repetition_penalty 1.05)."""
    from transformers import GenerationConfig as HFGenerationConfig

    from modeling.sampling import released_config

    qwen = SimpleNamespace(generation_config=HFGenerationConfig(top_k=20, repetition_penalty=1.05, top_p=0.8,
                                                                temperature=0.7, do_sample=True))
    cfg = released_config(qwen)
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.max_new_tokens) == (True, 1.0, 0.9, 1200)
    assert (cfg.top_k, cfg.repetition_penalty) == (20, 1.0)
    # An LLM whose generation_config leaves top_k unset: transformers' GenerationConfig default, 50.
    assert (released_config(tiny_model.llm).top_k, released_config(tiny_model.llm).repetition_penalty) == (50, 1.0)
    visual, audio = _features(len(SUBTITLES))
    short = GenerationConfig(**{**cfg.__dict__, "max_new_tokens": 10})
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


class HashTokens:
    """The tiny tokenizer, except that two ids the tiny model often emits read as ``##`` and ``#``, so the
    ``###`` stop string comes up mid-answer. Module-level: ``stop_tables`` caches by the object's id."""

    def __init__(self, tok, hashes: dict[int, str]):
        self.tok, self.hashes = tok, hashes

    def __len__(self):
        return len(self.tok)

    def convert_ids_to_tokens(self, ids):
        return [self.hashes.get(i, t) for i, t in zip(ids, self.tok.convert_ids_to_tokens(ids))]


MIXED_SUBTITLES = SUBTITLES + ["one two", "three four five six seven eight", "", "a b c d e f g h i j k"]
MIXED_BUDGETS = [3, 17, 9, 25, 5, 12, 20, 7, 14, 2]
_HASH_TOKENIZER: list = []


def _mixed_rows(model):
    """Left-padded embeddings of 10 rows with prompts of varied length (ov and description questions)."""
    from modeling.generate import build_inputs

    n = len(MIXED_SUBTITLES)
    tasks = ["ov", "description"] * (n // 2)
    ids, mask = build_inputs(model, MIXED_SUBTITLES, tasks, GenerationConfig(max_new_tokens=8))
    visual, audio = _features(n)
    with torch.inference_mode():
        embeds = model.inputs_embeds(ids, model.encode_multimodal(visual, audio))
    return embeds, mask


def _simulated_finishes(rows: list[list[int]], eos: int, strings: dict[int, str]) -> list[tuple[str, int]]:
    """(finish, tokens kept) of each greedy row under an EOS id and '#'-token strings: the stop rule of
    ``modeling.generate.stop_tables`` replayed on the host (tokens not in ``strings`` hold no '#')."""
    out = []
    for tokens, budget in zip(rows, MIXED_BUDGETS):
        run, finish = 0, ("length", budget)
        for k, t in enumerate(tokens):
            text = strings.get(t, "")
            lead = len(text) - len(text.lstrip("#"))
            if t == eos:
                finish = ("eos", k)
                break
            if "###" in text or run + lead >= 3:
                finish = ("stop", k + 1)
                break
            run = run + lead if text and not text.strip("#") else len(text) - len(text.rstrip("#"))
        out.append(finish)
    return out


def _mixed_stops(model, embeds, mask):
    """decode() keywords under which rows end at EOS, at ``###`` and at their budgets, at varied steps: the
    EOS and a '##' and a '#' token are ids the tiny model emits mid-answer, picked from a plain greedy run."""
    from collections import Counter
    from itertools import permutations

    pad = model.tokenizer.pad_token_id
    if not _HASH_TOKENIZER:
        plain = [r.tokens for r in decode(model.llm, embeds, mask, stops=Stops([-1], pad),
                                          config=GenerationConfig(), max_new=MIXED_BUDGETS)]
        common = [t for t, _ in Counter(t for r in plain for t in r[1:]).most_common(8)]

        def spread(pick):
            ends = _simulated_finishes(plain, pick[0], {pick[1]: "##", pick[2]: "#"})
            return len({f for f, _ in ends}), len({k for _, k in ends})

        eos, two, one = max(permutations(common, 3), key=spread)
        _HASH_TOKENIZER.append((eos, HashTokens(model.tokenizer, {two: "##", one: "#"})))
    eos, tokenizer = _HASH_TOKENIZER[0]
    return dict(stops=Stops([eos], pad, tokenizer), max_new=MIXED_BUDGETS)


def test_static_cache_greedy_equals_hf_for_every_row_with_and_without_refill(tiny_model, one_thread):
    """10 rows of mixed prompt lengths through 3 slots: same tokens and finish as the hf loop, row by row,
    whether a stopped row's slot is refilled at once or the next group waits for the whole group."""
    from modeling.static_decode import StaticDecoder

    embeds, mask = _mixed_rows(tiny_model)
    kw = _mixed_stops(tiny_model, embeds, mask)
    ref = decode(tiny_model.llm, embeds, mask, config=GenerationConfig(), **kw)
    assert {r.finish for r in ref} == {"eos", "stop", "length"}
    assert len({len(r.tokens) for r in ref}) >= 5  # rows stop at many different steps
    assert len({int(m) for m in mask.sum(1)}) >= 5  # and start from prompts of many lengths
    dec = StaticDecoder(tiny_model.llm, rows=3, length=int(mask.sum(1).max()) + max(MIXED_BUDGETS))
    for refill in (True, False):
        rows = dec.decode(embeds, mask, config=GenerationConfig(), refill=refill, **kw)
        assert [(r.tokens, r.finish) for r in rows] == [(r.tokens, r.finish) for r in ref], refill
    # More slots than rows, and the decoder reused by a second call.
    wide = StaticDecoder(tiny_model.llm, rows=16, length=int(mask.sum(1).max()) + max(MIXED_BUDGETS))
    rows = wide.decode(embeds, mask, config=GenerationConfig(), **kw)
    assert [(r.tokens, r.finish) for r in rows] == [(r.tokens, r.finish) for r in ref]


def test_static_cache_seeded_sampling_repeats_and_draws_as_hf(tiny_model, one_thread):
    """A row samples from its own generator whatever slot it lands in: runs repeat, and on the CPU they
    equal the hf loop's draws for the same seeds (with top-k and the repetition penalty on)."""
    from modeling.static_decode import StaticDecoder

    embeds, mask = _mixed_rows(tiny_model)
    kw = _mixed_stops(tiny_model, embeds, mask)
    cfg = GenerationConfig(do_sample=True, temperature=1.0, top_p=0.9, top_k=20, repetition_penalty=1.05)
    seeds = [sample_seed(5, f"s{i}", "ov") for i in range(len(MIXED_BUDGETS))]
    ref = decode(tiny_model.llm, embeds, mask, config=cfg, seeds=seeds, **kw)
    dec = StaticDecoder(tiny_model.llm, rows=4, length=int(mask.sum(1).max()) + max(MIXED_BUDGETS))
    first = dec.decode(embeds, mask, config=cfg, seeds=seeds, **kw)
    again = dec.decode(embeds, mask, config=cfg, seeds=seeds, refill=False, **kw)
    assert [r.tokens for r in first] == [r.tokens for r in again] == [r.tokens for r in ref]
    greedy = dec.decode(embeds, mask, config=GenerationConfig(), **kw)
    assert [r.tokens for r in greedy] != [r.tokens for r in first]


def test_a_row_over_the_static_cache_fails_alone(tiny_model, one_thread):
    from modeling.static_decode import CACHE_TOO_LONG, StaticDecoder

    embeds, mask = _mixed_rows(tiny_model)
    lengths = mask.sum(1).tolist()
    budgets = [6] * len(lengths)
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    fits = sorted(lengths)[-2] + 6  # every row fits but the longest prompt
    kw = dict(stops=Stops([-1], tiny_model.tokenizer.pad_token_id), config=GenerationConfig(), max_new=budgets)
    ref = decode(tiny_model.llm, embeds, mask, **kw)
    rows = StaticDecoder(tiny_model.llm, rows=4, length=fits).decode(embeds, mask, **kw)
    assert rows[longest].finish == CACHE_TOO_LONG and rows[longest].tokens == []
    assert all(r.tokens == q.tokens for i, (r, q) in enumerate(zip(rows, ref)) if i != longest)
    with pytest.raises(ValueError, match="rows >= 1 and length >= 2"):
        StaticDecoder(tiny_model.llm, rows=0, length=10)


def test_the_static_step_traces_as_one_graph(tiny_model, one_thread):
    """The one-token step compiles without a graph break (fullgraph; the eager backend, so no C++
    toolchain is needed): the prerequisite of CUDA graphs. Same tokens as the eager step."""
    from transformers import CompileConfig

    from modeling.static_decode import StaticDecoder

    embeds, mask = _mixed_rows(tiny_model)
    kw = dict(stops=Stops([-1], tiny_model.tokenizer.pad_token_id), config=GenerationConfig(), max_new=MIXED_BUDGETS)
    ref = decode(tiny_model.llm, embeds, mask, **kw)
    dec = StaticDecoder(tiny_model.llm, rows=4, length=int(mask.sum(1).max()) + max(MIXED_BUDGETS),
                        compile=CompileConfig(backend="eager", fullgraph=True))
    assert dec.compiled
    assert [r.tokens for r in dec.decode(embeds, mask, **kw)] == [r.tokens for r in ref]


def test_generate_raw_picks_the_backend(tiny_model, one_thread):
    """The entry point: static (refilled through 4 slots) gives hf's texts; auto is hf on the CPU; a row
    over an explicit cache length fails alone; an unknown backend is refused."""
    from modeling.generate import resolve_backend

    visual, audio = _features(len(SUBTITLES))
    hf = generate_raw(tiny_model, visual, audio, SUBTITLES, TASKS, GenerationConfig(max_new_tokens=10))
    static = generate_raw(tiny_model, visual, audio, SUBTITLES, TASKS,
                          GenerationConfig(max_new_tokens=10, backend="static", cache_rows=4))
    assert static[0] == hf[0] and [r.tokens for r in static[1]] == [r.tokens for r in hf[1]]
    assert resolve_backend("auto", "cpu") == "hf" and resolve_backend("auto", "cuda:0") == "static"
    short = generate_raw(tiny_model, visual[:2], audio[:2], ["hi", "a much longer subtitle " * 8], ["ov", "ov"],
                         GenerationConfig(max_new_tokens=10, backend="static", cache_rows=2, cache_tokens=120))
    assert short[1][0].finish == "length" and short[1][1].finish == "cache-too-long" and short[0][1] == ""
    with pytest.raises(ValueError, match="backend must be one of auto, hf, static"):
        GenerationConfig(backend="vllm").validate()


class ScriptedCacheLM(torch.nn.Module):
    """Row ``r`` (``r`` in its prompt embeddings' first channel) emits ``scripts[r][k]`` as its k-th new token,
    through a real KV cache: the prompt pass stores (row, prompt length) in every key column, and each step
    reads them back from column 0 of the cache it is handed (a DynamicCache or the static slots)."""

    def __init__(self, scripts: list[list[int]], vocab: int):
        from transformers import PretrainedConfig

        super().__init__()
        self.scripts, self.vocab = scripts, vocab
        self.embed = torch.nn.Embedding(vocab, 4)
        self.config = PretrainedConfig(num_hidden_layers=1)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, inputs_embeds=None, attention_mask=None, position_ids=None, cache=None, use_cache=None,
                logits_to_keep=0, **kwargs):
        from transformers import DynamicCache

        b, t, _ = inputs_embeds.shape
        if cache is None:
            meta = torch.stack([inputs_embeds[:, -1, 0], attention_mask.sum(1).float()], dim=-1)
            cache = DynamicCache()
            cache.update(meta.view(b, 1, 1, 2).expand(b, 1, t, 2).clone(), torch.zeros(b, 1, t, 2), 0)
            rows, k = meta[:, 0].long(), torch.zeros(b, dtype=torch.long)
        else:
            keys, _ = cache.update(torch.zeros(b, 1, 1, 2), torch.zeros(b, 1, 1, 2), 0)
            rows, k = keys[:, 0, 0, 0].long(), position_ids[:, -1] - keys[:, 0, 0, 1].long() + 1
        logits = torch.full((b, 1, self.vocab), -1e9)
        for i, (r, j) in enumerate(zip(rows.tolist(), k.tolist())):
            logits[i, 0, self.scripts[r][min(j, len(self.scripts[r]) - 1)]] = 0.0
        return SimpleNamespace(logits=logits, cache=cache)


def test_static_slots_stop_rows_and_refill_them_as_the_hf_loop_does(tiny_models):
    """Scripted rows through 3 slots: '###' split over tokens, EOS and budgets at many steps; every row
    starts with '#', so a slot whose last row ended on '###' must forget its '#' count when refilled."""
    from transformers import AutoTokenizer

    from modeling.static_decode import StaticDecoder

    tok = AutoTokenizer.from_pretrained(str(tiny_models["llm"]))
    eos, hash_id = tok.eos_token_id, tok.convert_tokens_to_ids("#")
    word = tok(" and", add_special_tokens=False)["input_ids"]
    sad = tok("sad", add_special_tokens=False)["input_ids"]
    scripts, want = [], []
    for r in range(12):
        words = (sad + word * r)[: 1 + r % 5]
        if r % 3 == 0:  # stop: the third '#' in a row ends it, '#' kept
            scripts.append([hash_id] + words + [hash_id] * 3 + word * 30)
            want.append(("stop", [hash_id] + words + [hash_id] * 3))
        elif r % 3 == 1:  # EOS, not kept
            scripts.append([hash_id] + words + [eos] + word * 30)
            want.append(("eos", [hash_id] + words))
        else:  # the budget
            scripts.append([hash_id] + word * 60)
            want.append(("length", ([hash_id] + word * 60)[: 4 * r]))
    budgets = [30 if f != "length" else 4 * r for r, (f, _) in enumerate(want)]
    lm = ScriptedCacheLM(scripts, vocab=len(tok))
    lengths = [2 + (r * 5) % 7 for r in range(12)]
    mask = torch.tensor([[0] * (9 - n) + [1] * n for n in lengths])
    embeds = torch.arange(12, dtype=torch.float32).view(12, 1, 1).expand(12, 9, 4).clone()
    kw = dict(stops=Stops([eos], eos, tok), config=GenerationConfig(), max_new=budgets)
    ref = decode(lm, embeds, mask, **kw)
    assert [(r.finish, r.tokens) for r in ref] == want
    dec = StaticDecoder(lm, rows=3, length=9 + max(budgets))
    steps = {}
    for refill in (True, False):
        rows = dec.decode(embeds, mask, refill=refill, **kw)
        assert [(r.finish, r.tokens) for r in rows] == want, refill
        steps[refill] = dec.steps
    assert steps[True] < steps[False]  # refilled slots do not wait for their group's longest row


def test_placeholder_strings_in_user_text_cannot_break_a_prompt(tiny_model, one_thread):
    """A subtitle or question holding "<AudioHere>" would splice a second audio vector (and fail the
    batch): the text loses the placeholder strings, each placeholder id stays exactly once."""
    visual, audio = _features(2)
    texts, rows = generate_raw(tiny_model, visual, audio, ["I said <AudioHere> and <FaceHere>.", "hi"],
                               ["ov", "question"], GenerationConfig(max_new_tokens=4),
                               questions=["Please recognize all possible emotional states of the character.",
                                          "What does <MultiHere> mean?"])
    assert all(len(r.tokens) == 4 for r in rows)
