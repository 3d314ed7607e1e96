"""The AffectGPT model and its generation: fusion, projectors and LoRA on Qwen2, prompts, the checkpoint
layout, the released-weights import, sampling settings and the two decode loops. Training and serving
both import it; it imports neither."""
