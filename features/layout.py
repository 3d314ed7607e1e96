"""The store's on-disk layout: group names, reserved sample columns, parts and their commit records.

See :mod:`features.store` for the layout as a whole. These names and rules are shared by the
store, its maintenance (vacuum, compact, inspect) and the readers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from core.errors import error_kind, error_stage
from features.spec import EncoderSpec

STORE_VERSION = 1
SAMPLES = "samples"
FEATURES = "features"
PART_KEY = "affectflow_part"
RESERVED = ("name", "subtitle", "status", "error")
STATUSES = ("ok", "failed")


@dataclass(frozen=True)
class Part:
    """One committed part of a group, as its commit record describes it."""

    group: str
    part_id: str
    names: tuple[str, ...]
    status: tuple[str, ...]
    errors: Mapping[str, str]
    committed_at: int
    spec: Mapping[str, Any] | None = None
    arrays: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"{self.group}/parts/{self.part_id}"

    def error_of(self, row: int) -> str:
        return self.errors.get(self.names[row], "")


@dataclass
class Latest:
    """name -> (part, row) after the latest-commit-wins rule, for one group."""

    rows: dict[str, tuple[Part, int]] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)

    def ok(self) -> set[str]:
        return {n for n, (p, r) in self.rows.items() if p.status[r] == "ok"}

    def failed(self) -> dict[str, str]:
        return {n: p.error_of(r) for n, (p, r) in self.rows.items() if p.status[r] != "ok"}


def feature_group(spec: EncoderSpec) -> str:
    """The group path of a spec's features inside the store."""
    return f"{FEATURES}/{spec.modality}/{spec.spec_id()}"


def part_id_for(names: Iterable[str], spec_ids: Iterable[str], generation: int = 0) -> str:
    """Deterministic part id: a retry of the same batch reuses (overwrites) the same uncommitted part."""
    key = json.dumps([sorted(names), sorted(spec_ids)], separators=(",", ":"))
    base = hashlib.sha256(key.encode()).hexdigest()[:16]
    return base if generation == 0 else f"{base}-g{generation}"


def str_list(values: Any, column: str) -> list[str]:
    """A stored string column as ``str`` values (None/NaN -> "", bytes decoded)."""
    out = []
    for v in np.asarray(values, dtype=object).reshape(-1).tolist():
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append("")
        elif isinstance(v, bytes):
            out.append(v.decode("utf-8", errors="replace"))
        else:
            out.append(str(v))
    return out


def failure_kind(error: str) -> str:
    """The kind of a recorded failure (``"video/missing: x.mp4 ..."`` -> ``"video/missing"``), else ``"unknown"``."""
    return error_kind(error) if ": " in error else "unknown"


def failure_stage(error: str) -> str:
    """The stage of a recorded failure (``"video/missing: x.mp4 ..."`` -> ``"video"``), else ``"unknown"``."""
    return error_stage(error) if ": " in error else "unknown"
