"""Training AffectGPT from the feature store: prompt datasets, the DeepSpeed loop, the Ray Train trainer."""
