"""AffectFlow: AffectGPT rebuilt as Ray / DeepSpeed / MLflow infrastructure.

This package owns the command line, the typed run configuration and the synthetic
test assets (tiny models, a MER2025-layout corpus). The data flow lives in
`pipelines/` -> `features/` -> `training/` -> `inference/`.
"""

__version__ = "0.1.0"
