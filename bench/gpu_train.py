"""Our training step vs a bare transformers + peft LoRA step, at Qwen2.5-7B shapes.

No Ray and no DeepSpeed (the GPU machine has neither): "our step" is the model's own forward
(fusion, projectors, placeholder splice, Qwen2 + LoRA), backward and a torch AdamW step over
our decay groups; "bare" is the same Qwen2 + the same LoRA fed ``input_ids`` with a plain
AdamW. Random weights, bf16, batch 8 x 1,024 tokens by default; tokens/s and peak memory of
each, side by side, from one run. Target: ours >= 90 % of bare.

    python bench/gpu_train.py                 # on a GPU, Qwen2.5-7B shapes
    python bench/gpu_train.py --tiny          # CPU smoke run at tiny shapes
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

import torch

from core.sections import ModelConfig
from modeling.model import LORA_TARGETS, QWEN25_7B_CONFIG, REAL_AUDIO_DIM, REAL_VISUAL_DIM, add_lora, build_model
from training.loop import optimizer_groups

TINY_CONFIG = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                   tie_word_embeddings=False)


def batch_for(vocab: int, splice_ids: list[int], bs: int, seq: int, device, visual_dim: int, audio_dim: int,
              seed: int = 0) -> dict:
    """Random ids with the 3 placeholders near the start; loss on the second half (the 'answer')."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab - 8, (bs, seq), generator=g)
    for k, tid in enumerate(splice_ids):
        ids[:, 10 + 5 * k] = tid
    labels = ids.clone()
    labels[:, : seq // 2] = -100
    return {
        "input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device),
        "visual": torch.randn(bs, 8, visual_dim, generator=g).to(device),
        "audio": torch.randn(bs, 8, audio_dim, generator=g).to(device),
    }


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_and_reset(device) -> float:
    """Peak GiB since the last reset (GPU allocator; on the CPU the process' max RSS, never reset)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def time_steps(step, warmup: int, steps: int, tokens: int, device) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return tokens * steps / (time.perf_counter() - t0)


def run_ours(cfg: dict, args, device, dtype) -> dict:
    shape = ModelConfig(preset="qwen2.5-7b", gradient_checkpointing=args.gc, lora_dropout=0.05)
    model = build_model(shape, llm_config=cfg, visual_dim=args.visual_dim, audio_dim=args.audio_dim, dtype=dtype,
                        device=device)
    model.train()
    opt = torch.optim.AdamW(optimizer_groups(model, 0.05), lr=1e-5, betas=(0.9, 0.999))
    batch = batch_for(cfg["vocab_size"], model.splice_ids, args.bs, args.seq, device, args.visual_dim, args.audio_dim)

    def step():
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rate = time_steps(step, args.warmup, args.steps, args.bs * args.seq, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"tokens_per_s": rate, "trainable": trainable}


def run_bare(cfg: dict, args, device, dtype) -> dict:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            base = Qwen2ForCausalLM(Qwen2Config(**cfg))
    finally:
        torch.set_default_dtype(saved)
    base.requires_grad_(False)
    model = add_lora(base, 16, 32, 0.05)
    if args.gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.05)
    batch = batch_for(cfg["vocab_size"], [], args.bs, args.seq, device, args.visual_dim, args.audio_dim)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    def step():
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rate = time_steps(step, args.warmup, args.steps, args.bs * args.seq, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"tokens_per_s": rate, "trainable": trainable}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (smoke run)")
    ap.add_argument("--bs", type=int, help="batch size (default 8; tiny 2)")
    ap.add_argument("--seq", type=int, help="tokens per sample (default 1024; tiny 128)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gc", action=argparse.BooleanOptionalAction, default=None,
                    help="gradient checkpointing in both (default: on at 7B shapes, off for --tiny)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    if args.tiny:
        cfg, device, dtype = TINY_CONFIG, torch.device("cpu"), torch.float32
        args.bs, args.seq = args.bs or 2, args.seq or 128
        args.visual_dim, args.audio_dim = 768, 64
        args.gc = bool(args.gc)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --tiny for the CPU smoke run", file=sys.stderr)
            return 2
        cfg, device, dtype = dict(QWEN25_7B_CONFIG), torch.device("cuda"), torch.bfloat16
        args.bs, args.seq = args.bs or 8, args.seq or 1024
        args.visual_dim, args.audio_dim = REAL_VISUAL_DIM, REAL_AUDIO_DIM
        args.gc = True if args.gc is None else args.gc
    cfg = {k: v for k, v in cfg.items() if k != "rope_parameters"}  # default RoPE: speed does not depend on theta

    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{dtype}, batch {args.bs} x {args.seq} tokens, gradient checkpointing {'on' if args.gc else 'off'}, "
          f"LoRA on {','.join(LORA_TARGETS)}; {args.warmup} warm-up + {args.steps} timed steps")
    results = {}
    peak_and_reset(device)
    for name, fn in (("bare transformers+peft", run_bare), ("ours (fusion+splice+LoRA)", run_ours)):
        results[name] = fn(cfg, args, device, dtype)
        results[name]["peak_gib"] = peak_and_reset(device)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"{'':<28} {'tokens/s':>12} {'peak GiB':>10} {'trainable':>14}")
    for name, r in results.items():
        print(f"{name:<28} {r['tokens_per_s']:>12.1f} {r['peak_gib']:>10.2f} {r['trainable']:>14,}")
    bare, ours = results["bare transformers+peft"], results["ours (fusion+splice+LoRA)"]
    ratio = ours["tokens_per_s"] / bare["tokens_per_s"]
    print(f"ours / bare: {ratio:.1%} of bare tokens/s (target >= 90%)"
          + ("; CPU peak is the process max RSS, cumulative" if device.type == "cpu" else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
