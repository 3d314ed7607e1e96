"""Getting a trained AffectGPT from wherever it lives: a checkpoint folder, a run folder or MLflow.

Accepted model references (every command that takes ``--model``):

- a trainable checkpoint folder (``affectflow_model.json`` + ``adapter/`` + ``fusion.safetensors``);
- a training run folder (``--out`` of ``affectflow train``): its latest checkpoint;
- ``models:/name@alias``, ``models:/name/3``, ``runs:/<run id>/model`` or any MLflow model URI
  logged by :mod:`registry.register` (our pyfunc flavour, see :class:`AffectGPTPyfunc`).

An alias is pinned to its version once (:func:`resolve_model`), so every Ray actor of a job
loads the same weights even if the alias moves mid-job. MLflow models are downloaded once per
machine into a cache keyed by the pinned URI (written to a temporary folder, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import InputError, ModelRefError
from core.paths import inside_root
from core.runtime import pick_device
from core.tracking import DEFAULT_CHECK_TIMEOUT_S, short_retries, unreachable
from modeling.checkpoint import SPEC_FILE, find_checkpoint, pick_dtype, read_spec

BUNDLE_FILE = "affectflow_bundle.json"
CKPT_ARTIFACT = "checkpoint"
BASE_ARTIFACT = "base_llm"
BUNDLE_ARTIFACT = "bundle"
ENV_BASE_LLM = "AFFECTFLOW_BASE_LLM"  # where a model logged with --no-bundle-base finds its base LLM


@dataclass
class ResolvedModel:
    """A model reference made concrete: local checkpoint + base LLM, and what to record in outputs."""

    ref: str  # what the user passed
    model_uri: str  # pinned: models:/name/3 for an alias, an absolute path for a folder
    version: str  # registry version ("" outside the registry)
    checkpoint: str  # local trainable checkpoint folder
    llm_path: str  # local base LLM folder ("" = the path recorded in the checkpoint's spec)

    def to_dict(self) -> dict:
        return asdict(self)

    def provenance(self) -> dict:
        """What an output records of the model: the pinned reference and version, and where its weights came
        from (the checkpoint spec's source: format ``affectgpt-released``, file and sha256; ``affectflow`` and
        no file for weights trained here)."""
        from modeling.checkpoint import read_spec

        source = read_spec(self.checkpoint).get("source") or {}
        return {"uri": self.model_uri, "version": self.version, "source_format": source.get("format", "affectflow"),
                "source_file": source.get("file", ""), "source_sha256": source.get("sha256", "")}


def is_mlflow_uri(ref: str) -> bool:
    return "://" in ref or ref.startswith(("models:", "runs:"))


def default_cache_dir() -> Path:
    return Path(os.environ.get("AFFECTFLOW_CACHE", Path.home() / ".cache" / "affectflow")) / "models"


def _pin(ref: str, tracking_uri: str | None) -> tuple[str, str, str]:
    """``(pinned uri, version, identity)``: ``models:/n@alias`` -> ``models:/n/<v>``; other URIs unchanged.

    ``identity`` is what makes a registered version unique beyond its number (run, source,
    creation time): a recreated registry (a new sqlite file, a reset server) hands out version 1
    again for another model, so the download cache keys on it too.
    """
    if not ref.startswith("models:/"):
        return ref, "", ""
    from mlflow.tracking import MlflowClient

    body = ref[len("models:/"):].strip("/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    parts = body.split("/")
    if "@" in body:
        name, alias = body.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    elif len(parts) == 2 and parts[1].isdigit():
        mv = client.get_model_version(parts[0], parts[1])
    elif len(parts) == 2:  # models:/name/Stage (deprecated stages): let MLflow resolve it
        return ref, "", ""
    else:
        raise ModelRefError(f"model URI {ref!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return f"models:/{mv.name}/{mv.version}", str(mv.version), f"{mv.run_id}|{mv.source}|{mv.creation_timestamp}"


def _download(uri: str, tracking_uri: str | None, cache_dir: Path, identity: str = "") -> Path:
    """The local copy of an MLflow model (downloaded once; concurrent callers each rename atomically)."""
    import mlflow

    key = hashlib.sha256(f"{tracking_uri}|{uri}|{identity}".encode()).hexdigest()[:20]
    dest = cache_dir / key
    if (dest / "MLmodel").is_file():
        return dest
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp)))
        if not (local / "MLmodel").is_file():
            raise ModelRefError(f"{uri} is not an MLflow model (no MLmodel file in its artifacts)")
        if local != tmp:
            for child in local.iterdir():
                shutil.move(str(child), tmp / child.name)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process finished first: use its copy
            if not (dest / "MLmodel").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def bundle_paths(model_dir: str | Path) -> tuple[Path, Path | None, dict]:
    """``(checkpoint, base LLM or None, bundle info)`` of a downloaded pyfunc model folder."""
    import yaml

    model_dir = Path(model_dir)
    meta = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
    arts = (meta.get("flavors", {}).get("python_function", {}) or {}).get("artifacts", {}) or {}

    def art(name: str) -> Path | None:
        entry = arts.get(name)
        if not entry:
            return None
        # The MLmodel file comes from the registry's artifact store: its paths must stay in the model folder.
        path = entry.get("path") if isinstance(entry, dict) else None
        try:
            return inside_root(model_dir, path if isinstance(path, str) else "",
                               f"{model_dir / 'MLmodel'} artifact {name!r}")
        except InputError as exc:
            raise ModelRefError(str(exc)) from None

    ckpt = art(CKPT_ARTIFACT)
    if ckpt is None or not (ckpt / SPEC_FILE).is_file():
        raise ModelRefError(f"{model_dir} is an MLflow model but not an AffectFlow one "
                            f"(no '{CKPT_ARTIFACT}' artifact holding {SPEC_FILE})")
    bundle = art(BUNDLE_ARTIFACT)
    info = json.loads(bundle.read_text(encoding="utf-8")) if bundle and bundle.is_file() else {}
    return ckpt, art(BASE_ARTIFACT), info


def resolve_model(ref: str | Path, *, tracking_uri: str | None = None, llm_path: str | Path | None = None,
                  cache_dir: str | Path | None = None, download: bool = True,
                  check_timeout: float = DEFAULT_CHECK_TIMEOUT_S) -> ResolvedModel:
    """Pin and (for MLflow URIs) download ``ref``; see the module docstring for the accepted forms.

    ``llm_path`` overrides the base LLM (needed for a model logged without its base when the
    recorded path does not exist here; ``$AFFECTFLOW_BASE_LLM`` does the same). An MLflow URI on a
    tracking server that does not answer within ``check_timeout`` seconds fails at once.
    """
    ref = str(ref)
    override = str(llm_path) if llm_path else os.environ.get(ENV_BASE_LLM, "")
    if not is_mlflow_uri(ref):
        ckpt = find_checkpoint(ref).resolve()
        return ResolvedModel(ref, str(ckpt), "", str(ckpt), override)
    why = unreachable(tracking_uri or "", check_timeout)
    if why:
        raise ModelRefError(f"cannot resolve {ref}: the MLflow tracking server {why} "
                            f"(checked with a {check_timeout:g}s timeout; --mlflow-uri names another)")
    try:
        with short_retries():
            pinned, version, identity = _pin(ref, tracking_uri)
    except ModelRefError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the user needs the URI and the cause
        raise ModelRefError(f"cannot resolve {ref} at tracking URI {tracking_uri or '(default)'}: {exc}") from None
    if not download:
        return ResolvedModel(ref, pinned, version, "", override)
    try:
        with short_retries():
            local = _download(pinned, tracking_uri, Path(cache_dir) if cache_dir else default_cache_dir(), identity)
    except ModelRefError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelRefError(f"cannot download {pinned} from {tracking_uri or '(default)'}: {exc}") from None
    ckpt, base, info = bundle_paths(local)
    llm = override or (str(base) if base is not None else info.get("base_llm_path", ""))
    if not llm:
        raise ModelRefError(f"{ref} was logged without its base LLM and records no path: pass --llm-path "
                            f"or set ${ENV_BASE_LLM}")
    return ResolvedModel(ref, pinned, version, str(ckpt), llm)


def load_model(ref: "str | Path | ResolvedModel", *, tracking_uri: str | None = None,
               llm_path: str | Path | None = None, device: str = "auto", dtype: str = "auto",
               cache_dir: str | Path | None = None, merge_lora: bool = True):
    """``(AffectGPT in eval mode, ResolvedModel)`` in ``dtype`` (``auto|fp32|bf16|fp16``, the torch names too):
    ``auto`` is what the checkpoint records (``modeling.checkpoint.pick_dtype``: fp16 for an imported release
    on CUDA, bf16 for ours on CUDA, fp32 on the CPU). fp16 runs as the release did: the LLM in fp16, the
    fusion's fp32 weights under fp16 autocast.

    ``merge_lora`` folds the LoRA deltas into the base weights (``merge_and_unload``): the same
    function, without the adapter's extra matmuls per layer — for inference only (the merged
    model cannot be saved as a trainable checkpoint).
    """
    import torch

    from modeling.model import AffectGPT

    resolved = ref if isinstance(ref, ResolvedModel) else resolve_model(
        ref, tracking_uri=tracking_uri, llm_path=llm_path, cache_dir=cache_dir)
    dev = pick_device(device)
    base = resolved.llm_path or None
    if base is not None and not (Path(base) / "config.json").is_file():
        raise ModelRefError(f"base LLM {base} for {resolved.ref} not found (config.json missing): pass --llm-path "
                            f"or set ${ENV_BASE_LLM}")
    try:
        dtype = pick_dtype(dtype, read_spec(resolved.checkpoint), dev)
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        model = AffectGPT.load_trainable(resolved.checkpoint, llm_path=base, dtype=torch_dtype, device=dev)
    except FileNotFoundError as exc:
        raise ModelRefError(f"cannot load {resolved.ref}: {exc}") from None
    if merge_lora and hasattr(model.llm, "merge_and_unload"):
        model.llm = model.llm.merge_and_unload()
    return model, resolved
