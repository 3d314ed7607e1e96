"""Batch labeling throughput: our Ray Data job (actor pool, batched left-padded greedy) vs a
batch-size-1 loop like the released code (one ``llm.generate`` call per sample).

Same model (an untrained tiny AffectGPT, or ``--model``), same inputs (a synthetic feature
store), same ``max_new_tokens``, greedy in both, fp32 and one torch thread on both sides, so both do
the same work per sample (an untrained model rarely stops early). Start-up is treated alike: warm,
ours after its first block against the loop after its model load; end to end, ours from starting
Ray (job start, actor start, model load, generation, writing the table) against the loop's model
load plus N samples at its rate. The baseline is timed on its first ``--baseline-n`` samples (a
rate; the loop's per-sample cost does not change with N), before and after our job, keeping the
better of the two rates; its texts are compared with ours.

    .venv/bin/python bench/label.py [--n 8192] [--baseline-n 32] [--batch-size 256] [--max-new-tokens 64]
                                    [--backend auto|hf|static]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path


def released_loop(model, data, n: int, max_new_tokens: int) -> tuple[float, list[str]]:
    """Samples/s and texts of the released-style loop: per sample, prompt -> embeds -> llm.generate."""
    import torch

    from modeling.generate import build_inputs, clean_output, eos_ids_of
    from modeling.sampling import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    texts = []
    t0 = time.perf_counter()
    for i in range(n):
        item = data[i]
        ids, mask = build_inputs(model, [item["subtitle"]], ["ov"], cfg)
        with torch.inference_mode():
            mm = model.encode_multimodal(item["visual"][None], item["audio"][None])
            embeds = model.inputs_embeds(ids, mm)
            out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, num_beams=1, eos_token_id=eos_ids_of(model),
                                     pad_token_id=model.tokenizer.pad_token_id)
        texts.append(clean_output(model.tokenizer.decode(out[0], skip_special_tokens=True)))
    return n / (time.perf_counter() - t0), texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8192, help="samples labeled by the Ray job")
    ap.add_argument("--baseline-n", type=int, default=32, help="samples timed in the batch-size-1 loop")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--backend", choices=("auto", "hf", "static"), default="auto",
                    help="label.backend of the Ray job (auto: hf on the CPU)")
    ap.add_argument("--model", help="checkpoint folder or MLflow URI (default: an untrained tiny AffectGPT)")
    ap.add_argument("--work", help="scratch folder (default: a temporary one)")
    args = ap.parse_args()

    import ray
    import torch

    from core.config import load_config
    from features.reader import FeatureDataset
    from inference.labeling import LabelRequest, label
    from inference.table import read_table
    from modeling.model import build_model
    from registry.resolve import load_model
    from synth.features import SyntheticFeatures, write_synthetic_store
    from synth.tiny_models import build_tiny_models

    torch.set_num_threads(1)  # the actor runs one thread too (label.torch_threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="affectflow-bench-label-"))
    models = build_tiny_models(work / "models", seed=0)
    model_ref = args.model or str(build_model("tiny", llm_path=models["llm"], visual_dim=768, audio_dim=64)
                                  .save_trainable(work / "ckpt"))
    store = work / "store.zarr"
    if not store.exists():  # parts of 256 samples (the store's default part size), so blocks stream
        feats = SyntheticFeatures(args.n, visual_dim=768, audio_dim=64)
        for start in range(0, args.n, 256):
            chunk = copy.copy(feats)
            chunk.items = feats.items[start:start + 256]
            write_synthetic_store(chunk, str(store), str(work / "labels"))
    data = FeatureDataset(str(store), visual="face")

    t0 = time.perf_counter()
    model, _ = load_model(model_ref, device="cpu")
    load_s = time.perf_counter() - t0  # the loop's start-up: its model load
    model.llm.generation_config.max_length = None  # max_new_tokens rules (silences a warning)
    base_rate, base_texts = released_loop(model, data, min(args.baseline_n, len(data)), args.max_new_tokens)

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_s = time.perf_counter() - t0
    cfg = load_config(None, [f"label.max_new_tokens={args.max_new_tokens}", f"label.actors={args.actors}",
                             f"label.backend={args.backend}", "label.task=ov", f"label.batch_size={args.batch_size}",
                             "seed=0"])
    out = work / "labels.parquet"
    out.unlink(missing_ok=True)
    stamps: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    summary = label(LabelRequest(store, model_ref, out, cfg),
                    on_batch=lambda rows: stamps.append((time.perf_counter(), rows)))
    end = time.perf_counter()
    ours = summary.ok / (ray_s + end - t0)  # from nothing running: Ray, job and actor start, model load, all rows
    first = stamps[0][0] - t0 if stamps else float("nan")  # job + actor start-up + the first block
    rest = summary.ok - (stamps[0][1] if stamps else 0)
    steady = rest / (end - stamps[0][0]) if stamps and rest > 0 else float("nan")  # after the first block
    # The box is shared: time the loop again after the job and keep its better rate (conservative).
    base_rate = max(base_rate, released_loop(model, data, len(base_texts), args.max_new_tokens)[0])
    table = read_table(out).to_pandas().set_index("name")
    same = sum(table.loc[data.names[i], "text"] == t for i, t in enumerate(base_texts))
    ray.shutdown()

    # The loop's end-to-end rate over the job's N samples: its model load, then N samples at its measured rate.
    base_end = summary.ok / (load_s + summary.ok / base_rate)
    print(f"tiny AffectGPT on the CPU, fp32, {args.max_new_tokens} new tokens, greedy, torch threads 1 on both "
          f"sides (the actor's label.torch_threads), label.backend={args.backend}")
    print(f"{'':44}{'samples':>8}{'samples/s':>12}")
    print(f"{'bs-1 loop (released style), after model load':44}{len(base_texts):>8}{base_rate:>12.2f}")
    print(f"{'Ray labeling, batch ' + str(args.batch_size) + ', after its first block':44}{rest:>8}{steady:>12.2f}")
    print(f"{'bs-1 loop, end to end (model load ' + f'{load_s:.1f}s + rate)':44}{summary.ok:>8}{base_end:>12.2f}")
    print(f"{'Ray labeling, end to end (Ray ' + f'{ray_s:.1f}s + job)':44}{summary.ok:>8}{ours:>12.2f}")
    print(f"speed-up: {steady / base_rate:.1f}x warm on both sides (start-up excluded alike), {ours / base_end:.1f}x "
          f"end to end (start-up included alike; target >= 8x); the job's first rows arrived {first:.1f}s after "
          f"its start (job and actor start-up, model load, the first block)")
    print(f"same text as the bs-1 loop: {same}/{len(base_texts)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
