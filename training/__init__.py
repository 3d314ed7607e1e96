"""The AffectGPT model (fusion, projectors, LoRA on Qwen2), its data, the DeepSpeed loop, checkpoints and MLflow."""
