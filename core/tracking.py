"""MLflow tracking: which URI a command uses (one rule for training, registry and labeling), and
whether its server answers, checked once with a short timeout before any work starts.

MLflow's own client retries a dead server for minutes (about 4 per call by default); the check
here answers in seconds, and :func:`short_retries` bounds the calls made after it.
"""

from __future__ import annotations

import base64
import os
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from core.errors import TrackingError
from core.redact import redact_text, redact_uri

DEFAULT_CHECK_TIMEOUT_S = 5.0


def absolute_uri(uri: str) -> str:
    """Make a relative ``sqlite:///x.db`` / file path absolute so Ray workers (other cwd) agree."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def unreachable(uri: str, timeout: float = DEFAULT_CHECK_TIMEOUT_S) -> str:
    """Why the tracking server at ``uri`` cannot be used ("" when it answers /health, or is local).

    A port that accepts connections but never answers fails after ``timeout`` seconds too.
    """
    if not uri.startswith(("http://", "https://")):
        return ""
    shown = redact_uri(uri)
    try:
        with urllib.request.urlopen(_health_request(uri), timeout=timeout) as resp:
            return "" if resp.status == 200 else f"{shown}/health answered HTTP {resp.status}"
    except Exception as exc:  # noqa: BLE001 - any failure means "not now"
        return f"{shown} is unreachable ({type(exc).__name__}: {redact_text(str(exc))})"


def _health_request(uri: str) -> urllib.request.Request:
    """GET ``uri``/health; credentials in the URI (``user:token@``) go in a basic-auth header, as
    MLflow's client (requests) sends them: urllib would read them as part of the host."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    request = urllib.request.Request(url)
    if parts.username is not None:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    return request


def require_tracking(uri: str, timeout: float = DEFAULT_CHECK_TIMEOUT_S, hint: str = "") -> None:
    """Raise ``TrackingError`` naming ``uri`` unless its server answers within ``timeout`` seconds."""
    why = unreachable(uri, timeout)
    if why:
        raise TrackingError(f"MLflow tracking server: {why} (checked with a {timeout:g}s timeout){hint}")


@contextmanager
def short_retries(max_retries: int = 3, timeout_s: int = 60):
    """Bound MLflow's HTTP retries for the calls inside (its defaults retry a dead server for minutes)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
