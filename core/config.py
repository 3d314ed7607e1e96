"""Typed run configuration: nested dataclasses loaded from YAML with dotted overrides.

The stage sections live in :mod:`core.sections`; this module adds the paths, Ray and MLflow
sections, composes them into :class:`Config`, and does the loading, the ``--set a.b=c``
overrides and the validation.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError
from core.redact import redact_uri
from core.sections import LabelConfig, ModelConfig, PreprocessConfig, ScoreConfig, StoreConfig, TrainConfig


@dataclass
class PathsConfig:
    """Where the embedded defaults keep their files (all relative to the working directory)."""

    models: str = ".affectflow/models"
    corpus: str = ".affectflow/corpus"
    store: str = ".affectflow/store.zarr"
    runs: str = ".affectflow/runs"


@dataclass
class MlflowConfig:
    """MLflow tracking and registry; the default is a local sqlite store."""

    tracking_uri: str = "sqlite:///.affectflow/mlflow.db"
    experiment: str = "affectgpt"
    registered_model: str = "affectgpt"
    alias: str = "latest"
    # Seconds a command waits for the tracking server's /health before it fails (or, for training,
    # before it says how to go on without it).
    check_timeout_s: float = 5.0

    def validate(self) -> None:
        if not 0 < self.check_timeout_s <= 300:
            raise ConfigError(f"check_timeout_s must be within (0, 300], got {self.check_timeout_s}")


@dataclass
class RayConfig:
    """How to reach Ray: empty address starts (or joins) a local instance."""

    address: str = ""
    num_cpus: int | None = None
    # Shared-memory object store of a local instance, in MiB (a cluster's is set by `ray start`).
    # Ray's default, 30 % of RAM, lets the store's touched pages grow to GBs that a streaming job
    # never needs; beyond the cap objects spill to disk. 0 = Ray's default. The store's pages
    # count in every process that touched them, so the cap bounds that share of a job's memory:
    # 768 against 1024 cut a 13k-row preprocessing run's steady state by ~0.13 GiB, with
    # preprocessing's 512 MiB Ray Data budget still inside it (no spilling).
    object_store_mb: int = 768
    # Task events the GCS of a local instance keeps (for `ray.timeline()` and the state API);
    # older ones are dropped. Ray's default, 100k, grew the GCS by ~160 MiB over the ~25k tasks
    # of a 132k-row preprocessing job. 0 = Ray's default.
    task_events_max: int = 10000

    def validate(self) -> None:
        if self.task_events_max < 0:
            raise ConfigError(f"task_events_max must be 0 (Ray's default) or > 0, got {self.task_events_max}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus must be >= 1, got {self.num_cpus}")
        if self.object_store_mb and self.object_store_mb < 100:
            raise ConfigError(f"object_store_mb must be 0 (Ray's default) or >= 100, got {self.object_store_mb}")


@dataclass
class Config:
    """The whole resolved configuration of one run."""

    seed: int = 42
    paths: PathsConfig = field(default_factory=PathsConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    def validate(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


# Values in error messages are cut (reprlib): a value from YAML can be huge, or a structure of
# shared aliases whose full repr is exponential in the file's size.
_REPR = reprlib.Repr()  # Python 3.10/3.11 take no keyword arguments here
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 120, 120
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
# Aliases (``*name``) one config file may use; every shipped config uses none. A few hundred bytes of
# nested aliases expand to billions of nodes for anything that walks them.
MAX_YAML_ALIASES = 64


def _show(value: Any) -> str:
    return _REPR.repr(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {_show(value)} is not a valid {_type_name(tp)}")
    if origin is typing.Literal:
        for allowed in args:
            if value == allowed or (isinstance(value, str) and str(allowed) == value):
                return allowed
        raise ConfigError(f"{key}: {_show(value)} is not one of {list(args)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader, aliases capped
                except yaml.YAMLError as exc:
                    problem = getattr(exc, "problem", None) or type(exc).__name__
                    raise ConfigError(f"{key}: {_show(text)} is not a list ({problem}): write a,b,c or "
                                      "[a, b, c]") from None
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:  # a fixed-length tuple, e.g. betas
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {_show(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_show(value)}")
        return dict(value)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {_show(value)}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {_show(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {_show(value)}")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {_show(value)}")
        if not math.isfinite(number):  # every float setting is finite (nan/inf fail here, not mid-run)
            raise ConfigError(f"{key}: expected a finite number, got {_show(value)}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {_show(value)}")
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"unknown config key {_show(where)} (known in {prefix or 'top level'}: {sorted(names)})")
    kwargs = {}
    for k, v in data.items():
        where = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _coerce(v, hints[k], where)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:  # name the section: the message names only the field
            raise ConfigError(f"{prefix or 'config'}: {exc}") from None
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=c`` into (["a", "b"], "c"); the value stays a string until coerced."""
    if "=" not in text:
        raise ConfigError(f"override {_show(text)} must look like key.path=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {_show(text)} has an empty key")
    return key.split("."), value


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would keep the last silently)
    and more than ``MAX_YAML_ALIASES`` aliases (an alias bomb)."""

    aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(f"more than {MAX_YAML_ALIASES} YAML aliases (*name), the last on line "
                                  f"{mark.line + 1}: a config needs none")
        return super().compose_node(parent, index)


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    lines: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in lines:
            raise ConfigError(f"duplicate key {_show(key)} on line {line} (first on line {lines[key]})")
        lines[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load the defaults, then a YAML file (if any), then ``key.path=value`` overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"config file {str(p)!r} nests too deeply to be a config") from None
        except ConfigError as exc:
            raise ConfigError(f"config file {str(p)!r}: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        data = loaded
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(data, keys, value)
    try:
        return _build(Config, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def to_dict(cfg: Any) -> dict:
    """The config as plain data (for YAML printing and MLflow params)."""
    return dataclasses.asdict(cfg)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_uri(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


def dump_yaml(cfg: Any) -> str:
    """The config as YAML (printed, and written to run folders and MLflow): credentials in URIs masked."""
    return yaml.safe_dump(_redacted(to_dict(cfg)), sort_keys=False)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 1e-5, ...}``: dotted keys for MLflow params (credentials in URIs masked)."""
    out: dict[str, Any] = {}
    for k, v in (to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = _redacted(v)
    return out
