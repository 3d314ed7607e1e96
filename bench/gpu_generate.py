"""Our batched generation vs batch-size-1 generation, at Qwen2.5-7B shapes (random weights).

No Ray (the GPU machine has torch, transformers and peft only). The AffectGPT model is
assembled from its parts (Qwen2 at 7B shapes + LoRA r16 + fusion), the prompt is the real
released prompt tokenized with the locally trained tiny tokenizer (ids are valid in the 7B
vocabulary). Every row generates exactly ``--new-tokens`` tokens (stops disabled) so that each
variant does the same work per sample. Three variants, side by side from one run:

- released: ``llm.generate(inputs_embeds=...)`` one sample at a time on the peft model;
- ours bs-1: our decode loop (``training.generate``), LoRA merged as labeling loads it;
- ours batched: the same loop over ``--batch-size`` left-padded samples.

    python bench/gpu_generate.py                # GPU, Qwen2.5-7B shapes, bf16
    python bench/gpu_generate.py --tiny         # CPU smoke run at tiny shapes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from training.model import QWEN25_7B_CONFIG, REAL_AUDIO_DIM, REAL_VISUAL_DIM, AffectGPT, ModelSpec  # noqa: E402
from training.model import MultimodalFusion, _lora  # noqa: E402
from training.prompt import PLACEHOLDER_TOKENS  # noqa: E402

TINY_CONFIG = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                   tie_word_embeddings=False)
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
    llm = _lora(base, 16, 32, 0.05)
    spec = ModelSpec(preset="tiny" if tiny else "qwen2.5-7b", visual_dim=REAL_VISUAL_DIM,
                     audio_dim=REAL_AUDIO_DIM, hidden_size=cfg["hidden_size"])
    return AffectGPT(llm, fusion.requires_grad_(False), spec, tok, ids).eval()


def inputs(model: AffectGPT, n: int, new_tokens: int, device: str):
    """Spliced embeddings + mask of ``n`` OV-task prompts (subtitles of varied length)."""
    from training.generate import GenerationConfig, build_inputs

    subs = [" ".join(SUBTITLE.split()[: 8 + (i * 7) % 20]) for i in range(n)]
    ids, mask = build_inputs(model, subs, ["ov"] * n, GenerationConfig(max_new_tokens=new_tokens))
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
    from training.generate import GenerationConfig, decode

    cfg = GenerationConfig(max_new_tokens=new_tokens)
    sync(device)
    t0 = time.perf_counter()
    for s in range(0, embeds.shape[0], batch):
        keep = mask[s:s + batch].sum(0) > 0  # drop the columns that are padding in every row of the chunk
        rows = decode(model.llm, embeds[s:s + batch][:, keep], mask[s:s + batch][:, keep], eos_ids=[-1],
                      pad_id=model.tokenizer.pad_token_id, config=cfg)
        assert all(len(r.tokens) == new_tokens for r in rows)
    sync(device)
    return embeds.shape[0] / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (smoke run)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=2, help="batched samples = batch size x this")
    ap.add_argument("--single", type=int, default=4, help="samples for each batch-size-1 variant")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if device == "cpu":
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = build(args.tiny, device, dtype)
    built = time.perf_counter() - t0
    n = args.batch_size * args.batches
    embeds, mask = inputs(model, n, args.new_tokens, device)
    prompt = mask.sum(1).float()
    # Warm-up (kernels, allocator), untimed.
    ours(model, embeds[:2], mask[:2], 4, 2, device)
    released(model, embeds[:1], mask[:1], 4, device)

    rel = released(model, embeds[: args.single], mask[: args.single], args.new_tokens, device)
    model.llm = model.llm.merge_and_unload()  # as registry.resolve.load_model does
    one = ours(model, embeds[: args.single], mask[: args.single], args.new_tokens, 1, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    bat = ours(model, embeds, mask, args.new_tokens, args.batch_size, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")

    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU (1 thread)"
    shape = "tiny" if args.tiny else "Qwen2.5-7B shapes (random weights)"
    print(f"{name}, {shape}, {str(dtype).replace('torch.', '')}, {args.new_tokens} new tokens per sample, "
          f"prompts {int(prompt.min())}-{int(prompt.max())} tokens; model built in {built:.0f}s")
    print(f"{'':36}{'samples':>8}{'samples/s':>12}{'tokens/s':>12}")
    for label, count, rate in (("released: llm.generate, bs 1", args.single, rel),
                               ("ours: decode loop, bs 1", args.single, one),
                               (f"ours: decode loop, bs {args.batch_size}", n, bat)):
        print(f"{label:36}{count:>8}{rate:>12.2f}{rate * args.new_tokens:>12.0f}")
    print(f"speed-up vs released bs-1: {bat / rel:.1f}x (target >= 20x); batching alone: {bat / one:.1f}x")
    if device.startswith("cuda"):
        print(f"peak GPU memory (batched): {peak:.1f} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "shape": shape, "new_tokens": args.new_tokens,
                                               "batch_size": args.batch_size, "released_bs1": rel, "ours_bs1": one,
                                               "ours_batched": bat, "speedup": bat / rel, "peak_gib": peak},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
