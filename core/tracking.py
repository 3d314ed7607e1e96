"""Which MLflow tracking URI a command uses: one rule for training, registry and labeling."""

from __future__ import annotations

import os
from pathlib import Path


def absolute_uri(uri: str) -> str:
    """Make a relative ``sqlite:///x.db`` / file path absolute so Ray workers (other cwd) agree."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def default_tracking_uri() -> str:
    from core.config import MlflowConfig

    return MlflowConfig().tracking_uri


def tracking_uri(configured: str | None = None, explicit: str | None = None) -> str:
    """``--mlflow-uri``, else ``$MLFLOW_TRACKING_URI`` when the config keeps its default (as on a
    cluster from ray_cluster.yaml), else the config's value; relative sqlite/file paths made absolute."""
    uri = explicit or ""
    if not uri:
        env = os.environ.get("MLFLOW_TRACKING_URI", "")
        uri = env if env and (not configured or configured == default_tracking_uri()) else (configured or "")
    return absolute_uri(uri or default_tracking_uri())
