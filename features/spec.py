"""Encoder specs: what produced a feature array, down to the weights and preprocessing.

A spec's canonical JSON hashes to ``spec_id``, the key of its feature group in the store, so
features from different encoders, layers, poolings or preprocessing never share an array.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.errors import MissingFileError, StoreError

MODALITIES = ("frame", "face", "audio")
DTYPES = ("float16", "float32")
# Weight files hashed by hash_weights, in the formats transformers saves.
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def _canonical_preprocess(value: Any) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    pairs = []
    for item in items:
        key, val = item
        pairs.append((str(key), str(val)))
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"EncoderSpec.preprocess has a repeated key: {sorted(keys)}")
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class EncoderSpec:
    """One feature group's identity: modality, encoder and weights, layer, pooling, shape, preprocessing."""

    modality: str
    encoder: str
    weights_hash: str
    layer: str
    pooling: str
    dim: int
    num_steps: int = 8
    preprocess: tuple[tuple[str, str], ...] = field(default=())
    dtype: str = "float16"

    def __post_init__(self) -> None:
        # Accept a dict or any pairs for preprocess; store it frozen and sorted so equal specs hash equal.
        object.__setattr__(self, "preprocess", _canonical_preprocess(self.preprocess))
        if self.modality not in MODALITIES:
            raise ValueError(f"EncoderSpec.modality: {self.modality!r} is not one of {list(MODALITIES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"EncoderSpec.dtype: {self.dtype!r} is not one of {list(DTYPES)}")
        for name in ("dim", "num_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"EncoderSpec.{name}: expected a positive integer, got {value!r}")
        for name in ("encoder", "weights_hash", "layer", "pooling"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"EncoderSpec.{name}: expected a non-empty string, got {value!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """Per-sample feature shape ``(num_steps, dim)``."""
        return (self.num_steps, self.dim)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = {k: v for k, v in self.preprocess}
        return data

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace; equal specs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EncoderSpec":
        """A spec read back from store metadata; one that does not fit is a ``StoreError``."""
        known = {"modality", "encoder", "weights_hash", "layer", "pooling", "dim", "num_steps", "preprocess", "dtype"}
        unknown = set(data) - known
        if unknown:
            raise StoreError(f"EncoderSpec: unknown fields {sorted(unknown)} (known: {sorted(known)})")
        try:
            return cls(**dict(data))
        except (TypeError, ValueError) as exc:  # a missing field, a bad value
            raise StoreError(f"malformed encoder spec {dict(data)!r}: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "EncoderSpec":
        return cls.from_dict(json.loads(text))

    def spec_id(self) -> str:
        """Short stable hash of the canonical JSON; the store's group key."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def label(self) -> str:
        """``modality/spec_id`` as printed by ``store inspect``."""
        return f"{self.modality}/{self.spec_id()}"


def hash_weights(model_dir: str | Path, patterns: Iterable[str] = WEIGHT_PATTERNS) -> str:
    """sha256 over the sorted weight files of a model directory (relative name + bytes), first 16 hex."""
    root = Path(model_dir)
    if not root.is_dir():
        raise MissingFileError(f"model directory {root} does not exist")
    files = sorted({p for pattern in patterns for p in root.rglob(pattern) if p.is_file()})
    if not files:
        raise MissingFileError(f"no weight files ({', '.join(patterns)}) under {root}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
