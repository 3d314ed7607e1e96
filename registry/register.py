"""Logging a trained checkpoint as an MLflow model and registering it.

:func:`log_and_register` is what the trainer's ``on_finish(checkpoint_dir, cfg)`` calls inside
its open run, and what ``affectflow register CHECKPOINT`` calls later. It logs the
:class:`registry.pyfunc.AffectGPTPyfunc` model (artifacts: the trainable weights without the
DeepSpeed optimizer state, the base LLM folder unless ``bundle_base=False`` for a non-tiny
preset, and a small JSON with the base LLM path), registers it under
``mlflow.registered_model`` and points ``mlflow.alias`` at the new version. When the tracking
server cannot be reached, nothing is raised: the checkpoint stays where it is and the exact
``affectflow register`` command to run later is printed.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.console import echo
from core.tracking import short_retries, tracking_uri, unreachable
from registry.resolve import BASE_ARTIFACT, BUNDLE_ARTIFACT, CKPT_ARTIFACT
from modeling.checkpoint import SPEC_FILE, find_checkpoint
from core.errors import AffectFlowError, MissingFileError, TrackingError

# MLflow reserves the alias "latest": models:/NAME@latest always means the highest version,
# which a fresh registration is, so it needs (and admits) no set_registered_model_alias call.
LATEST = "latest"
MODEL_NAME = "model"  # the logged model's name inside the run
# What inference needs from a training checkpoint (its deepspeed/ optimizer state is left out).
CHECKPOINT_FILES = ("adapter", "fusion.safetensors", SPEC_FILE, "train_state.json")


@dataclass
class Registered:
    """One registered model version."""

    name: str
    version: str
    alias: str
    run_id: str
    model_uri: str  # models:/name@alias
    version_uri: str  # models:/name/<version>
    bundled_base: bool


def register_command(checkpoint: str | Path, uri: str, name: str, alias: str, bundle_base: bool = True) -> str:
    """The ``affectflow register`` command that does this later."""
    args = ["affectflow", "register", str(checkpoint), "--mlflow-uri", uri, "--name", name, "--alias", alias]
    if not bundle_base:
        args.append("--no-bundle-base")
    return shlex.join(args)


def stage_checkpoint(checkpoint: Path, dest: Path) -> Path:
    """Copy what inference needs of ``checkpoint`` into ``dest`` (no optimizer state)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in CHECKPOINT_FILES:
        src = checkpoint / item
        if src.is_dir():
            shutil.copytree(src, dest / item)
        elif src.is_file():
            shutil.copy2(src, dest / item)
    for needed in ("adapter", "fusion.safetensors", SPEC_FILE):
        if not (dest / needed).exists():
            raise MissingFileError(f"{checkpoint} is not a complete AffectFlow checkpoint: {needed} is missing")
    return dest


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "peft", "safetensors", "mlflow", "pandas")]


def bundles_base(checkpoint: Path, bundle_base: bool) -> bool:
    """Whether the base LLM travels with the model: asked for, or the tiny preset (~1 MB, always)."""
    spec = json.loads((checkpoint / SPEC_FILE).read_text(encoding="utf-8"))
    return bool(bundle_base or spec.get("preset") == "tiny")


def log_model(checkpoint: str | Path, *, llm_path: str | Path | None = None, bundle_base: bool = True,
              registered_model: str | None = None):
    """Log the pyfunc model into the active run (and register it); returns MLflow's ``ModelInfo``."""
    import mlflow

    from registry.pyfunc import AffectGPTPyfunc, signature

    ckpt = find_checkpoint(checkpoint)
    spec = json.loads((ckpt / SPEC_FILE).read_text(encoding="utf-8"))
    base = Path(llm_path or spec.get("llm_path") or "")
    bundle = bundles_base(ckpt, bundle_base)
    if bundle and not (base / "config.json").is_file():
        raise MissingFileError(f"base LLM {base} (recorded in {ckpt / SPEC_FILE}) not found: pass --llm-path")
    with tempfile.TemporaryDirectory(prefix="affectflow-log-") as tmp:
        staged = stage_checkpoint(ckpt, Path(tmp) / CKPT_ARTIFACT)
        info = {"base_llm_path": str(base.resolve()) if str(base) else "", "bundled_base": bundle,
                "preset": spec.get("preset"), "source_checkpoint": str(ckpt.resolve())}
        bundle_file = Path(tmp) / "affectflow_bundle.json"
        bundle_file.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        artifacts = {CKPT_ARTIFACT: str(staged), BUNDLE_ARTIFACT: str(bundle_file)}
        if bundle:
            artifacts[BASE_ARTIFACT] = str(base)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=AffectGPTPyfunc(), artifacts=artifacts,
            registered_model_name=registered_model, signature=signature(), pip_requirements=_requirements(),
            metadata={"affectflow": info, "requires": "the affectflow package (this repository) importable"},
        )


def log_and_register(checkpoint_dir: str | Path, cfg=None, *, uri: str | None = None, name: str | None = None,
                     alias: str | None = None, bundle_base: bool = True, llm_path: str | Path | None = None,
                     experiment: str | None = None, tags: dict[str, str] | None = None) -> Registered | None:
    """Log + register ``checkpoint_dir``, set the alias and put ``tags`` on the run and the version;
    ``None`` (with instructions printed) when the tracking server cannot be reached. Uses the active
    run if there is one (the trainer's): ``train(..., on_finish=log_and_register)`` is the intended
    wiring. Given a training run folder outside a run (``affectflow register RUN_DIR``), the new run
    also gets the folder's config as params and its ``metrics.jsonl`` as metrics (a run trained
    with ``--no-track``, or whose server went away mid-run)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from core.config import MlflowConfig

    mc = cfg.mlflow if cfg is not None else MlflowConfig()
    if uri is None and mlflow.active_run() is not None:
        uri = mlflow.get_tracking_uri()  # inside the trainer's run: log where its params went
    uri = tracking_uri(mc.tracking_uri, uri)
    name, alias = name or mc.registered_model, alias or mc.alias
    ckpt = find_checkpoint(checkpoint_dir)
    later = register_command(ckpt, uri, name, alias, bundle_base)
    why = unreachable(uri)
    if why:
        _print_later(why, ckpt, later)
        return None
    try:
        with short_retries():
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            active = mlflow.active_run()
            if active is None:
                mlflow.set_experiment(experiment or mc.experiment)
                run_ctx = mlflow.start_run(run_name=f"register-{ckpt.name}")
            else:
                run_ctx = _nullrun(active)
            with run_ctx as run:
                if active is None:
                    mlflow.log_param("checkpoint_dir", str(ckpt))
                    upload_run_folder(Path(checkpoint_dir))
                info = log_model(ckpt, llm_path=llm_path, bundle_base=bundle_base, registered_model=name)
                version = str(info.registered_model_version)
                if alias.lower() != LATEST:
                    MlflowClient(uri, uri).set_registered_model_alias(name, alias, version)
                mlflow.set_tag("affectflow.registered", f"{name}/{version}@{alias}")
                for key, value in (tags or {}).items():  # on the run and on the registered version
                    mlflow.set_tag(key, value)
                    MlflowClient(uri, uri).set_model_version_tag(name, version, key, value)
                result = Registered(name, version, alias, run.info.run_id, f"models:/{name}@{alias}",
                                    f"models:/{name}/{version}", bundles_base(ckpt, bundle_base))
    except (AffectFlowError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds
        why = unreachable(uri)
        if not why:  # the server answers: it refused the request, and retrying later would not help
            raise TrackingError(f"MLflow at {uri} refused to log or register {ckpt}: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from None
        _print_later(why, ckpt, later)  # a server lost mid-way: keep the checkpoint, say how to retry
        return None
    echo(f"[register] {result.model_uri} -> version {result.version} (run {result.run_id}); "
         f"base LLM {'bundled' if result.bundled_base else 'not bundled (path recorded)'}")
    return result


def upload_run_folder(folder: Path) -> int:
    """Into the active run: a training run folder's ``train_config.yaml`` as params and its
    ``metrics.jsonl`` as metrics (non-finite values, written as null, are left out); the step count."""
    import mlflow
    import yaml
    from mlflow.entities import Metric

    from core.config import flatten

    config, metrics = folder / "train_config.yaml", folder / "metrics.jsonl"
    if config.is_file():
        params = flatten(yaml.safe_load(config.read_text(encoding="utf-8")) or {})
        items = [(k, str(v)[:500]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params(dict(items[start:start + 100]))
    if not metrics.is_file():
        return 0
    by_step: dict[int, dict] = {}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record  # a step replayed after a restart: the last record
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for step, rec in sorted(by_step.items())
             for k, v in rec.items() if k not in ("step", "nonfinite") and isinstance(v, (int, float))]
    client, run_id = mlflow.tracking.MlflowClient(), mlflow.active_run().info.run_id
    for start in range(0, len(batch), 1000):  # MLflow takes at most 1,000 metrics per call
        client.log_batch(run_id, metrics=batch[start:start + 1000])
    return len(by_step)


@contextmanager
def _nullrun(run):
    yield run


def _print_later(why: str, ckpt: Path, command: str) -> None:
    echo(f"[register] could not log/register the model: {why}\n"
         f"[register] the checkpoint is kept at {ckpt}\n"
         f"[register] to register it later, run:\n    {command}")
