"""Our batched generation vs batch-size-1 generation, and the decode backends against the memory
bandwidth bound, at Qwen2.5-7B shapes (random weights).

No Ray (the GPU machine has torch, transformers and peft only). The AffectGPT model is
assembled from its parts (Qwen2 at 7B shapes + LoRA r16 + fusion), the prompt is the real
released prompt tokenized with the locally trained tiny tokenizer (ids are valid in the 7B
vocabulary). Stops are disabled: every row generates exactly its budget, so each variant does
the same work per sample.

Part 1 (batching), every row ``--new-tokens`` tokens, all on the same weights:

- released, unmerged: ``llm.generate(inputs_embeds=...)`` one sample at a time on the peft model,
  as the release runs it (LoRA applied beside each layer at every step);
- released, merged: the same calls on the model with its LoRA merged, as labeling loads it;
- ours bs-1: our decode loop (``modeling.hf_decode``) on the merged model;
- ours batched: the same loop over ``--batch-size`` left-padded samples.

The headline (batching) compares ours batched with the released loop on the merged model: the same
weights, dtype and kernels, so only the batching and the loop differ. The gain from merging alone is
the unmerged line against the merged one, printed on its own.

Part 2 (backends), ``--prompt-tokens`` prompts, batch ``--batch-size``, two workloads: fixed
(``--new-tokens`` each, ``--batches`` batches) and mixed (30 % of rows stop near 25 tokens, the
rest between 150 and 400; ``--mixed-batches`` batches). Per workload, new tokens/s of HF
``generate`` (DynamicCache, batch by batch), our hf backend, the static backend (compiled step on
CUDA) without and with in-flight refill, each as a fraction of the bandwidth bound: the bytes a
step must read (the weights but the input embedding table, plus each row's cached keys and
values) over the HBM bandwidth of a large device-to-device copy measured in the same run.

    python bench/gpu_generate.py                # GPU, Qwen2.5-7B shapes, bf16
    python bench/gpu_generate.py --tiny         # CPU smoke run at tiny shapes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from modeling.model import (
    QWEN25_7B_CONFIG,
    REAL_AUDIO_DIM,
    REAL_VISUAL_DIM,
    AffectGPT,
    ModelSpec,
    MultimodalFusion,
    add_lora,
)
from modeling.prompt import PLACEHOLDER_TOKENS

TINY_CONFIG = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                   tie_word_embeddings=False)
CHECK_WARMUP = 12  # new tokens per row of the static decoder's untimed first call (the compile)
SUBTITLE = ("What are you talking about? I never said that, and you know it. Why would I ever say "
            "something like that to you, of all people?")


def build(tiny: bool, device: str, dtype: torch.dtype) -> AffectGPT:
    """AffectGPT with random weights at 7B (or tiny) shapes and the tiny tokenizer + placeholders."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from synth.tiny_models import build_tokenizer

    tok = build_tokenizer()
    tok.add_tokens(list(PLACEHOLDER_TOKENS), special_tokens=True)
    tok.pad_token = tok.eos_token
    ids = {t: tok.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS}
    cfg = dict(TINY_CONFIG if tiny else QWEN25_7B_CONFIG)
    cfg.update(bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            base = Qwen2ForCausalLM(Qwen2Config(**cfg))
            fusion = MultimodalFusion(REAL_VISUAL_DIM, REAL_AUDIO_DIM, cfg["hidden_size"])
    finally:
        torch.set_default_dtype(default)
    base.requires_grad_(False)
    llm = add_lora(base, 16, 32, 0.05)
    spec = ModelSpec(preset="tiny" if tiny else "qwen2.5-7b", visual_dim=REAL_VISUAL_DIM,
                     audio_dim=REAL_AUDIO_DIM, hidden_size=cfg["hidden_size"])
    return AffectGPT(llm, fusion.requires_grad_(False), spec, tok, ids).eval()


def inputs(model: AffectGPT, n: int, new_tokens: int, device: str, prompt_tokens: int | None = None):
    """Spliced embeddings + mask of ``n`` OV-task prompts (subtitles of varied length); with
    ``prompt_tokens``, long subtitles shortened to fit that prompt budget (prompts of about that length)."""
    from modeling.generate import build_inputs
    from modeling.sampling import GenerationConfig

    if prompt_tokens is None:
        subs = [" ".join(SUBTITLE.split()[: 8 + (i * 7) % 20]) for i in range(n)]
        cfg = GenerationConfig(max_new_tokens=new_tokens)
    else:
        words = (SUBTITLE + " ") * (prompt_tokens // 4)
        subs = [" ".join(words.split()[i % 7:]) for i in range(n)]
        cfg = GenerationConfig(max_new_tokens=new_tokens, max_prompt_tokens=prompt_tokens)
    ids, mask = build_inputs(model, subs, ["ov"] * n, cfg)
    g = torch.Generator().manual_seed(1)
    dtype = model.fusion.multi_proj.weight.dtype
    visual = torch.randn(n, 8, REAL_VISUAL_DIM, generator=g).to(device, dtype)
    audio = torch.randn(n, 8, REAL_AUDIO_DIM, generator=g).to(device, dtype)
    with torch.inference_mode():
        embeds = model.inputs_embeds(ids.to(device), model.encode_multimodal(visual, audio))
    return embeds, mask.to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def released(model: AffectGPT, embeds, mask, new_tokens: int, device: str) -> float:
    """Samples/s of llm.generate, one sample per call (left padding stripped per sample)."""
    from transformers import GenerationConfig as HFConfig

    cfg = HFConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                   eos_token_id=None, pad_token_id=model.tokenizer.pad_token_id)
    sync(device)
    t0 = time.perf_counter()
    for i in range(embeds.shape[0]):
        keep = mask[i].bool()
        with torch.inference_mode():
            out = model.llm.generate(inputs_embeds=embeds[i:i + 1, keep], attention_mask=mask[i:i + 1, keep],
                                     generation_config=cfg)
        assert out.shape[-1] == new_tokens, out.shape
    sync(device)
    return embeds.shape[0] / (time.perf_counter() - t0)


def ours(model: AffectGPT, embeds, mask, new_tokens: int, batch: int, device: str) -> float:
    """Samples/s of our decode loop in chunks of ``batch`` rows."""
    from modeling.hf_decode import Stops, decode
    from modeling.sampling import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=new_tokens)
    sync(device)
    t0 = time.perf_counter()
    for s in range(0, embeds.shape[0], batch):
        keep = mask[s:s + batch].sum(0) > 0  # drop the columns that are padding in every row of the chunk
        rows = decode(model.llm, embeds[s:s + batch][:, keep], mask[s:s + batch][:, keep],
                      stops=Stops([-1], model.tokenizer.pad_token_id), config=cfg)
        assert all(len(r.tokens) == new_tokens for r in rows)
    sync(device)
    return embeds.shape[0] / (time.perf_counter() - t0)


def hbm_bandwidth(device: str) -> float:
    """Bytes/s of a large device-to-device copy (each byte read once and written once), best of 5."""
    n = (4 << 30) if device.startswith("cuda") else (256 << 20)
    src = torch.ones(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(6):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * n / best


def step_bytes(llm) -> tuple[int, int]:
    """Bytes a decode step must read: the weights (but the input embedding table, of which it reads one
    row per sample), and the keys and values of one cached token over all layers."""
    emb = llm.get_input_embeddings().weight
    weights = sum(p.numel() * p.element_size() for p in llm.parameters()) - emb.numel() * emb.element_size()
    c = llm.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return weights, 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * emb.element_size()


def bound(prompts: list[int], budgets: list[int], batch: int, weights: int, kv: int, bandwidth: float) -> float:
    """New tokens/s if every step kept ``batch`` rows busy and read only what it must at ``bandwidth``:
    the weights once per step, and each row's cached tokens (prompt + tokens so far) once per token."""
    tokens = sum(budgets)
    cached = sum(p * n + n * (n + 1) // 2 for p, n in zip(prompts, budgets))
    return tokens / ((tokens / batch * weights + cached * kv) / bandwidth)


def mixed_budgets(n: int, seed: int = 0) -> list[int]:
    """30 % of the rows stop near 25 new tokens (20-30), the rest between 150 and 400, shuffled."""
    g = torch.Generator().manual_seed(seed)
    short = int(round(0.3 * n))
    budgets = torch.cat(
        [torch.randint(20, 31, (short,), generator=g), torch.randint(150, 401, (n - short,), generator=g)]
    )
    return budgets[torch.randperm(n, generator=g)].tolist()


def run_backend(kind: str, model: AffectGPT, embeds, mask, budgets: list[int], batch: int, device: str,
                decoder=None) -> tuple[float, list[list[int]]]:
    """Seconds and tokens per row of one variant over all rows (greedy, stops disabled, budgets per row).

    ``hf-generate``: ``llm.generate`` per batch, up to the batch's largest budget (a static batch runs
    until its longest row ends; the tokens past a row's budget are cut). ``hf``: our decode loop per
    batch. ``static`` / ``refill``: ``decoder`` over all rows, refilling slots or not.
    """
    from transformers import GenerationConfig as HFConfig

    from modeling.hf_decode import Stops, decode
    from modeling.sampling import GenerationConfig

    pad = model.tokenizer.pad_token_id
    rows: list[list[int]] = []
    sync(device)
    t0 = time.perf_counter()
    if kind in ("static", "refill"):
        out = decoder.decode(embeds, mask, stops=Stops([-1], pad), config=GenerationConfig(), max_new=budgets,
                             refill=kind == "refill")
        rows = [r.tokens for r in out]
    for s in range(0, embeds.shape[0] if kind in ("hf-generate", "hf") else 0, batch):
        e, m, b = embeds[s:s + batch], mask[s:s + batch], budgets[s:s + batch]
        if kind == "hf":
            rows += [r.tokens for r in decode(model.llm, e, m, stops=Stops([-1], pad), config=GenerationConfig(),
                                              max_new=b)]
            continue
        cfg = HFConfig(max_new_tokens=max(b), min_new_tokens=max(b), do_sample=False, num_beams=1,
                       eos_token_id=None, pad_token_id=pad)
        with torch.inference_mode():
            out = model.llm.generate(inputs_embeds=e, attention_mask=m, generation_config=cfg).tolist()
        rows += [o[:n] for o, n in zip(out, b)]
    sync(device)
    assert [len(r) for r in rows] == budgets
    return time.perf_counter() - t0, rows


def workloads(args, model: AffectGPT, device: str, name: str) -> dict:
    """Part 2: the fixed and the mixed workload through each variant; prints the table, returns the figures."""
    from modeling.hf_decode import Stops
    from modeling.static_decode import StaticDecoder

    bandwidth = hbm_bandwidth(device)
    weights, kv = step_bytes(model.llm)
    figures = {"bandwidth_gbs": bandwidth / 1e9, "weights_gb": weights / 1e9, "kv_bytes_per_token": kv}
    print(f"\n{name}: copy bandwidth {bandwidth / 1e9:.0f} GB/s; a step reads {weights / 1e9:.3g} GB of weights "
          f"+ {kv / 1e3:.1f} kB per cached token per row")
    for work, n in (("fixed", args.batch_size * args.batches), ("mixed", args.batch_size * args.mixed_batches)):
        budgets = [args.new_tokens] * n if work == "fixed" else mixed_budgets(n)
        embeds, mask = inputs(model, n, max(budgets), device, prompt_tokens=args.prompt_tokens)
        prompts = mask.sum(1).tolist()
        ceiling = bound(prompts, budgets, args.batch_size, weights, kv, bandwidth)
        decoder = StaticDecoder(model.llm, args.batch_size, max(prompts) + max(budgets))
        t0 = time.perf_counter()  # warm-up: the compile (CUDA graphs) and the allocator, untimed
        decoder.decode(embeds[: args.batch_size], mask[: args.batch_size],
                       stops=Stops([-1], model.tokenizer.pad_token_id), max_new=[CHECK_WARMUP] * args.batch_size)
        warm = time.perf_counter() - t0
        run_backend("hf-generate", model, embeds[:2], mask[:2], [4, 4], 2, device)
        results = {}
        for kind in ("hf-generate", "hf", "static", "refill"):
            seconds, rows = run_backend(kind, model, embeds, mask, budgets, args.batch_size, device, decoder)
            results[kind] = (sum(budgets) / seconds, rows, decoder.steps if kind in ("static", "refill") else None)
        base = results["hf-generate"][0]
        print(f"\nworkload {work}: {n} rows, prompts {min(prompts)}-{max(prompts)} tokens, {sum(budgets)} new tokens "
              f"({min(budgets)}-{max(budgets)} per row), batch {args.batch_size}; bound {ceiling:.0f} new tokens/s; "
              f"static warm-up (compile) {warm:.0f}s")
        print(f"{'':36}{'new tok/s':>10}{'of bound':>10}{'vs HF':>8}{'steps':>8}{'same tokens as hf':>19}")
        for kind, label in (("hf-generate", "HF generate (DynamicCache)"), ("hf", "ours: hf backend"),
                            ("static", "ours: static, no refill"), ("refill", "ours: static + refill")):
            rate, rows, steps = results[kind]
            # HF generate keeps EOS out with min_new_tokens (so its rows reach their budgets); ours has no EOS.
            same = sum(a == b for a, b in zip(rows, results["hf"][1])) if kind != "hf-generate" else None
            print(f"{label:36}{rate:>10.0f}{rate / ceiling:>10.1%}{rate / base:>7.1f}x{steps or '':>8}"
                  f"{'-' if same is None else f'{same}/{n}':>19}")
            figures[f"{work}_{kind}"] = {
                "tokens_per_s": rate,
                "of_bound": rate / ceiling,
                "vs_hf_generate": rate / base,
                "same_tokens_as_hf": same,
            }
        figures[f"{work}_bound"] = ceiling
        del decoder
    fixed, mixed = figures["fixed_refill"]["of_bound"], figures["mixed_refill"]["vs_hf_generate"]
    print(
        f"\ntargets: fixed >= 40 % of the bound (static + refill: {fixed:.0%}, "
        f"{'met' if fixed >= 0.4 else 'NOT met'}); "
        f"mixed >= 3x HF generate (static + refill: {mixed:.1f}x, {'met' if mixed >= 3 else 'NOT met'})"
        + ("" if device.startswith("cuda") else "; GPU targets: on the CPU the bench only shows that it runs")
    )
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (smoke run)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=2, help="batched samples = batch size x this")
    ap.add_argument("--single", type=int, default=4, help="samples for each batch-size-1 variant")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=512, help="prompt length of part 2's workloads")
    ap.add_argument("--mixed-batches", type=int, default=4, help="mixed-workload rows = batch size x this")
    ap.add_argument("--part", choices=("all", "batching", "backends"), default="all")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if device == "cpu":
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = build(args.tiny, device, dtype)
    built = time.perf_counter() - t0
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU (1 thread)"
    shape = "tiny" if args.tiny else "Qwen2.5-7B shapes (random weights)"
    if args.part == "backends":
        model.llm = model.llm.merge_and_unload()  # as registry.resolve.load_model does
        print(f"{name}, {shape}, {str(dtype).replace('torch.', '')}; model built in {built:.0f}s")
        figures = workloads(args, model, device, name)
        if args.json:
            Path(args.json).write_text(json.dumps({"device": name, "shape": shape, **figures}, indent=2) + "\n")
        return 0
    n = args.batch_size * args.batches
    embeds, mask = inputs(model, n, args.new_tokens, device)
    prompt = mask.sum(1).float()
    # Warm-up (kernels, allocator), untimed.
    ours(model, embeds[:2], mask[:2], 4, 2, device)
    released(model, embeds[:1], mask[:1], 4, device)

    unmerged = released(model, embeds[: args.single], mask[: args.single], args.new_tokens, device)
    model.llm = model.llm.merge_and_unload()  # as registry.resolve.load_model does
    released(model, embeds[:1], mask[:1], 4, device)  # warm-up of the merged weights, untimed as above
    rel = released(model, embeds[: args.single], mask[: args.single], args.new_tokens, device)
    one = ours(model, embeds[: args.single], mask[: args.single], args.new_tokens, 1, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    bat = ours(model, embeds, mask, args.new_tokens, args.batch_size, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")

    print(f"{name}, {shape}, {str(dtype).replace('torch.', '')}, {args.new_tokens} new tokens per sample, "
          f"prompts {int(prompt.min())}-{int(prompt.max())} tokens; model built in {built:.0f}s")
    print(f"{'':42}{'samples':>8}{'samples/s':>12}{'tokens/s':>12}")
    for label, count, rate in (("released: llm.generate, bs 1, unmerged", args.single, unmerged),
                               ("released: llm.generate, bs 1, merged", args.single, rel),
                               ("ours: decode loop, bs 1, merged", args.single, one),
                               (f"ours: decode loop, bs {args.batch_size}, merged", n, bat)):
        print(f"{label:42}{count:>8}{rate:>12.2f}{rate * args.new_tokens:>12.0f}")
    print(f"speed-up vs the released bs-1 loop on the same merged weights: {bat / rel:.1f}x (target >= 20x); "
          f"our loop alone (bs 1 vs bs 1): {one / rel:.2f}x; batching alone: {bat / one:.1f}x")
    print(f"merging the LoRA alone (released loop, merged vs unmerged): {rel / unmerged:.2f}x; ours batched vs the "
          f"release as it runs (unmerged): {bat / unmerged:.1f}x")
    if device.startswith("cuda"):
        print(f"peak GPU memory (batched): {peak:.1f} GiB")
    figures = workloads(args, model, device, name) if args.part == "all" else {}
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "shape": shape, "new_tokens": args.new_tokens,
                                               "batch_size": args.batch_size, "released_bs1_unmerged": unmerged,
                                               "released_bs1": rel, "ours_bs1": one,
                                               "ours_batched": bat, "speedup": bat / rel, "peak_gib": peak, **figures},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
