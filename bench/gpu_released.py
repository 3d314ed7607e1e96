"""The released-checkpoint importer at Qwen2.5-7B shapes: import time, and labeling throughput of the
imported model against the same weights saved in our own checkpoint format (should be equal).

No Ray (the GPU machine has torch, transformers and peft only). Random weights: a released-format
``checkpoint_000060_loss_0.000.pth`` (the 410 trainable tensors plus the unused image projector, in
fp32 as the release trains them) and an "LLM folder" holding the 7B ``config.json`` and the
locally trained tiny tokenizer (the importer reads only the config; its ids are valid in the 7B
vocabulary). The base LLM is built once in memory with random weights; each checkpoint's adapter
and fusion weights are loaded onto it in turn, exactly as ``AffectGPT.load_trainable`` does, and
the LoRA deltas are merged as labeling merges them. Generation is ``modeling.generate.generate``,
the function the labeling stage calls, greedy with a fixed number of new tokens.

    python bench/gpu_released.py             # GPU, Qwen2.5-7B shapes, bf16
    python bench/gpu_released.py --tiny      # CPU smoke run at tiny shapes
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from gpu_generate import SUBTITLE, TINY_CONFIG  # the same tiny shapes and subtitle

from modeling.model import QWEN25_7B_CONFIG, REAL_AUDIO_DIM, REAL_VISUAL_DIM


def llm_folder(root: Path, tiny: bool) -> tuple[Path, dict]:
    """A folder with the LLM's config.json (no weights) and the tiny tokenizer."""
    from transformers import Qwen2Config

    from synth.tiny_models import build_tokenizer

    tok = build_tokenizer()
    cfg = dict(TINY_CONFIG if tiny else QWEN25_7B_CONFIG)
    cfg.update(bos_token_id=tok.pad_token_id or tok.eos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id or tok.eos_token_id)
    folder = root / "llm"
    Qwen2Config(**cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, cfg


def released_file(path: Path, llm_cfg: dict) -> dict[str, torch.Tensor]:
    """Random fp32 tensors under the released names, saved as the release saves them."""
    from modeling.released import expected_model, key_map

    model = expected_model(llm_cfg, REAL_VISUAL_DIM, REAL_AUDIO_DIM, "face")
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(params[n].shape, generator=g) * 0.02 for k, n in key_map(model).items()}
    state["image_llama_proj.weight"] = torch.randn(llm_cfg["hidden_size"], REAL_VISUAL_DIM, generator=g) * 0.02
    state["image_llama_proj.bias"] = torch.zeros(llm_cfg["hidden_size"])
    config = {"datasets": {"mercaptionplus": {"face_or_frame": "multiface_audio_face_text"}}}
    torch.save({"model": state, "optimizer": {}, "config": config, "scaler": {}, "epoch": 60}, path)
    return state


def ours_folder(out: Path, llm_cfg: dict, state: dict, llm: Path) -> None:
    """The same weights written by our own ``save_trainable`` (the training path's format)."""
    from modeling.released import expected_model, key_map

    model = expected_model(llm_cfg, REAL_VISUAL_DIM, REAL_AUDIO_DIM, "face", llm_path=str(llm))
    model.load_state_dict({n: state[k] for k, n in key_map(model).items()}, strict=False, assign=True)
    model.save_trainable(out)


def load_on(base, ckpt: Path, tok, device: str, dtype: torch.dtype):
    """AffectGPT from a checkpoint folder on an in-memory base (a deep copy: merging changes weights)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from modeling.checkpoint import ADAPTER_DIR, FUSION_FILE, read_spec
    from modeling.model import AffectGPT, ModelSpec, MultimodalFusion
    from modeling.prompt import PLACEHOLDER_TOKENS

    spec = ModelSpec(**read_spec(ckpt))
    llm = PeftModel.from_pretrained(copy.deepcopy(base), str(ckpt / ADAPTER_DIR)).merge_and_unload()
    fusion = MultimodalFusion(spec.visual_dim, spec.audio_dim, spec.hidden_size, spec.pooling)
    fusion.load_state_dict(load_file(str(ckpt / FUSION_FILE)))
    ids = {t: tok.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS}
    return AffectGPT(llm, fusion.to(device, dtype), spec, tok, ids).eval()


def label_rate(model, n: int, batch: int, new_tokens: int, device: str) -> tuple[float, list[str]]:
    """Samples/s of ``generate`` over ``n`` OV-task samples in batches of ``batch``; and the texts."""
    from modeling.generate import eos_ids_of, fit_prompts
    from modeling.hf_decode import Stops, decode, left_pad
    from modeling.prompt import question_for
    from modeling.sampling import GenerationConfig

    subs = [" ".join(SUBTITLE.split()[: 8 + (i * 7) % 20]) for i in range(n)]
    g = torch.Generator().manual_seed(1)
    dtype = model.fusion.multi_proj.weight.dtype
    visual = torch.randn(n, 8, REAL_VISUAL_DIM, generator=g).to(device, dtype)
    audio = torch.randn(n, 8, REAL_AUDIO_DIM, generator=g).to(device, dtype)
    cfg = GenerationConfig(max_new_tokens=new_tokens)
    texts: list[str] = []
    sync(device)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        fitted = fit_prompts(model, subs[s:s + batch], [question_for("ov")] * len(subs[s:s + batch]), cfg)
        ids, mask = left_pad([f.ids for f in fitted], model.tokenizer.pad_token_id)
        with torch.inference_mode():
            embeds = model.inputs_embeds(
                ids.to(device), model.encode_multimodal(visual[s : s + batch], audio[s : s + batch])
            )
        # EOS id -1: every row generates exactly new_tokens (same work for both models).
        rows = decode(model.llm, embeds, mask.to(device), stops=Stops([-1], model.tokenizer.pad_token_id), config=cfg)
        assert eos_ids_of(model) and all(len(r.tokens) == new_tokens for r in rows)
        texts += [model.tokenizer.decode(r.tokens) for r in rows]
    sync(device)
    return n / (time.perf_counter() - t0), texts


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (smoke run)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per model, alternating (best counts)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()

    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from modeling.prompt import PLACEHOLDER_TOKENS
    from modeling.released import import_released

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if device == "cpu":
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gpu_released-") as tmp:
        root = Path(tmp)
        llm, llm_cfg = llm_folder(root, args.tiny)
        ckpt = root / "checkpoint_000060_loss_0.000.pth"
        state = released_file(ckpt, llm_cfg)
        t0 = time.perf_counter()
        result = import_released(ckpt, llm, root / "imported")
        import_s = time.perf_counter() - t0
        ours_folder(root / "ours", llm_cfg, state, llm)

        tok = AutoTokenizer.from_pretrained(str(llm))
        tok.add_tokens(list(PLACEHOLDER_TOKENS), special_tokens=True)
        tok.pad_token = tok.eos_token
        torch.manual_seed(0)
        saved = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                base = Qwen2ForCausalLM(Qwen2Config(**llm_cfg))
        finally:
            torch.set_default_dtype(saved)
        base.requires_grad_(False).eval()
        n = args.batch_size * args.batches
        # Both models side by side (two merged copies of the base: 2 x 15 GB at 7B bf16), timed in
        # alternating rounds so that clock or load drift hits both alike; the best round counts.
        models = {name: load_on(base, root / name, tok, device, dtype) for name in ("imported", "ours")}
        del base
        rates: dict[str, float] = {name: 0.0 for name in models}
        texts: dict[str, list[str]] = {}
        for name, model in models.items():
            label_rate(model, 2, 2, 4, device)  # warm-up, untimed
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.rounds):
            for name, model in models.items():
                rate, texts[name] = label_rate(model, n, args.batch_size, args.new_tokens, device)
                rates[name] = max(rates[name], rate)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")

    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU (1 thread)"
    shape = "tiny" if args.tiny else "Qwen2.5-7B shapes (random weights)"
    print(f"{gpu}, {shape}, {str(dtype).replace('torch.', '')}, batch {args.batch_size}, {n} samples, "
          f"{args.new_tokens} new tokens each")
    print(f"import: {import_s:.1f}s ({result.used} tensors mapped, {len(result.dropped)} dropped)")
    print(f"{'':34}{'samples/s':>11}{'per 1,000 videos':>18}")
    for name, label in (("imported", "imported released checkpoint"), ("ours", "same weights, our format")):
        print(f"{label:34}{rates[name]:>11.2f}{1000 / rates[name]:>16.0f} s")
    same = texts["imported"] == texts["ours"]
    print(f"ratio imported/ours: {rates['imported'] / rates['ours']:.3f} (should be ~1); identical outputs: {same}")
    if device.startswith("cuda"):
        print(f"peak GPU memory, both models loaded, while labeling: {peak:.1f} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": gpu, "shape": shape, "import_s": import_s,
                                               "rates": rates, "identical": same, "peak_gib": peak}, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
