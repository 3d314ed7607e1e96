"""The run folder's record of a training run, and what of it MLflow still lacks.

One owner for these files of a run folder (``affectflow train --out``)::

    metrics.jsonl          one strict-JSON line per optimizer step, written by rank 0 (``training.loop``)
    mlflow_run.json        the MLflow run the training run logs to: id, tracking URI, experiment
    mlflow_unsent.json     how many steps rank 0's MLflow sender could not send (written as it ends)

``metrics.jsonl`` is the complete record; the MLflow run is its copy. :func:`upload_missing` sends
the steps the run lacks (after an outage), so the trainer at its end and ``affectflow register
RUN_DIR`` later both complete the one MLflow run of the training run instead of starting another.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from core.redact import redact_uri

METRICS_FILE = "metrics.jsonl"
MLFLOW_RUN_FILE = "mlflow_run.json"
UNSENT_FILE = "mlflow_unsent.json"
CONFIG_FILE = "train_config.yaml"
# Keys of a metrics line that are not metrics: the step is MLflow's step, the time its timestamp.
NOT_METRICS = ("step", "time", "nonfinite")
# Always logged, always finite: which steps the MLflow run holds is read from this metric's history.
PRESENCE_KEY = "lr"


def read_history(folder: str | Path) -> list[dict]:
    """Per-step metrics of a run folder, the last record of each step (steps replayed after a restart win)."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


def mlflow_metrics(record: dict, now_ms: int | None = None) -> list:
    """The MLflow ``Metric`` entities of one metrics line (null values, written for non-finite ones, left out)."""
    from mlflow.entities import Metric

    stamp = int(record["time"] * 1000) if isinstance(record.get("time"), (int, float)) else (now_ms or 0)
    return [Metric(k, float(v), stamp, int(record["step"])) for k, v in record.items()
            if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)]


def write_mlflow_run(folder: str | Path, run_id: str, uri: str, experiment: str) -> None:
    """Keep the id of the run's MLflow run in the run folder (``affectflow register RUN_DIR`` resumes it);
    the tracking URI is kept without its credentials (`core.redact`)."""
    (Path(folder) / MLFLOW_RUN_FILE).write_text(json.dumps(
        {"run_id": run_id, "tracking_uri": redact_uri(uri), "experiment": experiment}, indent=2) + "\n",
        encoding="utf-8")


def recorded_on(recorded: dict | None, uri: str) -> bool:
    """Whether the MLflow run ``recorded`` (:func:`read_mlflow_run`) lives on the server at ``uri``
    (compared without credentials, which the record never holds)."""
    return bool(recorded) and recorded.get("tracking_uri") == redact_uri(uri)


def read_mlflow_run(folder: str | Path) -> dict | None:
    """The MLflow run recorded in a run folder, or None (a run trained with ``--no-track``)."""
    path = Path(folder) / MLFLOW_RUN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_unsent(folder: str | Path, unsent: int, dropped: int) -> None:
    """Rank 0's MLflow sender at its end: the steps it could not send (``dropped`` of them pushed out of its
    full buffer; the rest still in it when the wait ran out)."""
    (Path(folder) / UNSENT_FILE).write_text(json.dumps({"unsent": unsent + dropped, "dropped": dropped}) + "\n",
                                            encoding="utf-8")


def read_unsent(folder: str | Path) -> int | None:
    """The steps rank 0's MLflow sender could not send, or None when it left no count (it did not end)."""
    path = Path(folder) / UNSENT_FILE
    return int(json.loads(path.read_text(encoding="utf-8"))["unsent"]) if path.is_file() else None


def upload_missing(client, run_id: str, folder: str | Path) -> tuple[int, int]:
    """Send the steps of ``metrics.jsonl`` that MLflow run ``run_id`` lacks; ``(steps sent, steps in the file)``."""
    history = read_history(folder)
    have = {m.step for m in client.get_metric_history(run_id, PRESENCE_KEY)}
    now = int(time.time() * 1000)
    batch = [m for rec in history if int(rec["step"]) not in have for m in mlflow_metrics(rec, now)]
    for start in range(0, len(batch), 1000):  # MLflow takes at most 1,000 metrics per call
        client.log_batch(run_id, metrics=batch[start:start + 1000])
    (Path(folder) / UNSENT_FILE).unlink(missing_ok=True)
    return sum(1 for rec in history if int(rec["step"]) not in have), len(history)


def run_folder_of(path: str | Path) -> Path | None:
    """The training run folder holding ``path`` (itself or a checkpoint under ``ray/train/``), or None."""
    path = Path(path)
    for folder in (path, *list(path.parents)[:3]):
        if (folder / METRICS_FILE).is_file() or (folder / MLFLOW_RUN_FILE).is_file():
            return folder
    return None
