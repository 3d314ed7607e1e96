"""Logging a trained checkpoint as an MLflow model and registering it.

:func:`log_and_register` is what the trainer's ``on_finish(checkpoint_dir, cfg)`` calls inside
its open run, and what ``affectflow register CHECKPOINT`` calls later. It logs the
:class:`registry.pyfunc.AffectGPTPyfunc` model (artifacts: the trainable weights without the
DeepSpeed optimizer state, the base LLM folder unless ``bundle_base=False`` for a non-tiny
preset, and a small JSON with the base LLM path), registers it under
``mlflow.registered_model`` and points ``mlflow.alias`` at the new version. A checkpoint with a
non-finite weight, or whose forward pass on one sample is not finite, is refused first
(:func:`check_finite`, naming the tensor). When the tracking server cannot be reached, nothing is
raised: the checkpoint stays where it is and the exact ``affectflow register`` command to run later
is printed. Given a training run folder, that command resumes the training run's own MLflow run
(``training.record``), sends the metrics it lacks, ends it and registers the model there.
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
from core.errors import AffectFlowError, MissingFileError, ModelRefError, TrackingError
from core.tracking import short_retries, tracking_uri, unreachable
from modeling.checkpoint import ADAPTER_DIR, FAILURE_FILE, FUSION_FILE, SPEC_FILE, find_checkpoint, read_spec
from registry.resolve import BASE_ARTIFACT, BUNDLE_ARTIFACT, CKPT_ARTIFACT
from training.record import (
    CONFIG_FILE,
    mlflow_metrics,
    read_history,
    read_mlflow_run,
    recorded_on,
    run_folder_of,
    upload_missing,
)

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


def check_finite(checkpoint: str | Path, llm_path: str | Path | None = None) -> None:
    """Refuse a checkpoint (``ModelRefError``) with a non-finite trainable weight, naming the tensor, or
    whose forward pass on one fixed sample gives a non-finite loss or logits, naming the first module
    whose output is not finite. Weights of about 1e30 are finite, yet answer only ``!!!…`` (the argmax
    of NaN logits): only the forward pass shows them."""
    import torch
    from safetensors.torch import load_file

    from modeling.prompt import QUESTIONS, encode_example, ov_answer
    from registry.resolve import load_model

    ckpt = Path(checkpoint)
    for part in (ckpt / FUSION_FILE, ckpt / ADAPTER_DIR / "adapter_model.safetensors"):
        if not part.is_file():
            continue
        for name, tensor in load_file(str(part)).items():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ModelRefError(f"{ckpt} is not registered: weight {name} ({part.relative_to(ckpt)}) holds "
                                    f"{bad} non-finite value(s) of {tensor.numel()}")
    spec = read_spec(ckpt)
    model, _ = load_model(str(ckpt), llm_path=llm_path, merge_lora=False,
                          dtype="auto" if spec.get("preset") == "tiny" else "bfloat16")
    device = next(model.fusion.parameters()).device
    g = torch.Generator().manual_seed(0)
    visual = torch.randn(1, 8, int(spec["visual_dim"]), generator=g).to(device)
    audio = torch.randn(1, 8, int(spec["audio_dim"]), generator=g).to(device)
    ids, labels = encode_example(model.tokenizer, "I never said that.", QUESTIONS["ov"], ov_answer(["happy"]),
                                 spec.get("visual_stream", "face"), 256)
    first: list[str] = []

    def watch(name):
        def hook(_module, _inputs, output):
            value = output[0] if isinstance(output, tuple) else getattr(output, "logits", output)
            if not first and torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                first.append(name)
        return hook

    handles = [m.register_forward_hook(watch(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], device=device), labels=torch.tensor([labels], device=device),
                        visual=visual, audio=audio)
    finally:
        for h in handles:
            h.remove()
    if not (torch.isfinite(out.loss).all() and torch.isfinite(out.logits).all()):
        where = f"the output of {first[0]} is the first that is not finite" if first else "the logits are not finite"
        raise ModelRefError(f"{ckpt} is not registered: its forward pass on a sample gives loss={float(out.loss)} "
                            f"({where}); the weights diverged (train again with a lower train.lr)")


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

    from registry.pyfunc import MODEL_CODE, signature

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
            name=MODEL_NAME, python_model=str(MODEL_CODE), artifacts=artifacts,  # from code: no pickle
            registered_model_name=registered_model, signature=signature(), pip_requirements=_requirements(),
            metadata={"affectflow": info, "requires": "the affectflow package (this repository) importable"},
        )


def log_and_register(checkpoint_dir: str | Path, cfg=None, *, bundle_base: bool = True,
                     llm_path: str | Path | None = None, tags: dict[str, str] | None = None) -> Registered | None:
    """Log + register ``checkpoint_dir`` where ``cfg.mlflow`` says (tracking URI, experiment, registered
    model name and alias), set the alias and put ``tags`` on the run and the version;
    ``None`` (with instructions printed) when the tracking server cannot be reached. Uses the active
    run if there is one (the trainer's): ``train(..., on_finish=log_and_register)`` is the intended
    wiring. Given a training run folder outside a run (``affectflow register RUN_DIR``): the folder's
    own MLflow run when it is on this server (resumed, sent the steps of ``metrics.jsonl`` it lacks,
    ended FINISHED), else a new run with the folder's config as params and ``metrics.jsonl`` as
    metrics (a run trained with ``--no-track``). A run folder whose run failed is refused (its
    MLflow run is ended FAILED). The checkpoint is checked first (:func:`check_finite`)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from core.config import MlflowConfig

    mc = cfg.mlflow if cfg is not None else MlflowConfig()
    # Inside the trainer's run: log where its params went.
    uri = tracking_uri(mc.tracking_uri, mlflow.get_tracking_uri() if mlflow.active_run() is not None else None)
    name, alias = mc.registered_model, mc.alias
    ckpt = find_checkpoint(checkpoint_dir)
    folder = run_folder_of(checkpoint_dir) if mlflow.active_run() is None else None
    later = register_command(folder or ckpt, uri, name, alias, bundle_base)
    if folder is not None and (folder / FAILURE_FILE).is_file():
        _end_failed_run(folder, uri)
        message = json.loads((folder / FAILURE_FILE).read_text(encoding="utf-8")).get("message", "")
        raise ModelRefError(f"{folder} holds a failed training run, nothing of it is registered: {message}")
    check_finite(ckpt, llm_path)
    why = unreachable(uri)
    if why:
        _print_later(why, ckpt, later)
        return None
    try:
        with short_retries():
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            active = mlflow.active_run()
            resumed = None
            if active is None:
                resumed = _own_run(folder, uri)
                if resumed:  # in its own experiment, whatever mlflow.experiment says now
                    mlflow.set_experiment(experiment_id=MlflowClient(uri).get_run(resumed).info.experiment_id)
                    run_ctx = mlflow.start_run(run_id=resumed)
                else:
                    mlflow.set_experiment(mc.experiment)
                    run_ctx = mlflow.start_run(run_name=f"register-{ckpt.name}")
            else:
                run_ctx = _nullrun(active)
            with run_ctx as run:
                if resumed:
                    sent, steps = upload_missing(MlflowClient(uri), resumed, folder)
                    echo(f"[register] resumed MLflow run {resumed} of {folder}: sent the {sent} of {steps} steps' "
                         "metrics it lacked")
                elif active is None and folder is not None:
                    upload_run_folder(folder)
                if active is None:
                    mlflow.set_tag("checkpoint_dir", str(ckpt))
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

    from core.config import flatten

    config = folder / CONFIG_FILE
    if config.is_file():
        params = flatten(yaml.safe_load(config.read_text(encoding="utf-8")) or {})
        items = [(k, str(v)[:500]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params(dict(items[start:start + 100]))
    history = read_history(folder)
    now = int(time.time() * 1000)
    batch = [m for rec in history for m in mlflow_metrics(rec, now)]
    client, run_id = mlflow.tracking.MlflowClient(), mlflow.active_run().info.run_id
    for start in range(0, len(batch), 1000):  # MLflow takes at most 1,000 metrics per call
        client.log_batch(run_id, metrics=batch[start:start + 1000])
    return len(history)


def _own_run(folder: Path | None, uri: str) -> str | None:
    """The id of the run folder's own MLflow run when it lives on the server at ``uri``, else None."""
    from mlflow.tracking import MlflowClient

    recorded = read_mlflow_run(folder) if folder is not None else None
    if not recorded_on(recorded, uri):
        return None
    try:
        return MlflowClient(uri).get_run(recorded["run_id"]).info.run_id
    except Exception:  # noqa: BLE001 - deleted, or another server's store: a new run
        return None


def _end_failed_run(folder: Path, uri: str) -> None:
    """A failed run folder's own MLflow run, left open by an outage: send what it lacks and end it FAILED."""
    from mlflow.tracking import MlflowClient

    run_id = _own_run(folder, uri) if not unreachable(uri) else None
    if run_id is None:
        return
    with short_retries():
        client = MlflowClient(uri)
        upload_missing(client, run_id, folder)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")


@contextmanager
def _nullrun(run):
    yield run


def _print_later(why: str, ckpt: Path, command: str) -> None:
    echo(f"[register] could not log/register the model: {why}\n"
         f"[register] the checkpoint is kept at {ckpt}\n"
         f"[register] to register it later, run:\n    {command}")
