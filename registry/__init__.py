"""The model registry: log trained checkpoints to MLflow, register them, resolve and load model references."""
