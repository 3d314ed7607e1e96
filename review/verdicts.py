"""Reviewers' verdicts out of a review dataset, as the verdicts file training reads (`features.labels`).

A sample has a verdict when a reviewer tagged it ``ok`` or ``wrong``, tagged one of its OV labels
``wrong``, or set ``corrected``:

- ``wrong`` wins over ``ok`` (a sample tagged both, or tagged ``ok`` with a wrong label, is wrong);
- its labels are ``corrected`` when set; else, for ``ok``, the model's OV labels; else, for labels
  tagged ``wrong``, the model's other labels (none left: no labels); else none. An ``ok`` sample
  whose OV labels are an empty list gives ``[]`` (neutral); one without OV labels gives none.
- ``tagged_at`` is the sample's last change in the database (FiftyOne stamps every edit, tags included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone
from pathlib import Path

from review.dataset import CORRECTED_FIELD, OK_TAG, OV_FIELD, WRONG_TAG, open_dataset


@dataclass
class PullSummary:
    dataset: str
    out: Path
    ok: int = 0
    wrong: int = 0
    with_labels: int = 0

    def format(self) -> str:
        return (f"{self.ok + self.wrong} verdicts from {self.dataset!r} -> {self.out}: {self.ok} ok, "
                f"{self.wrong} wrong; {self.with_labels} give labels "
                f"(`affectflow train --labels {self.out}` trains on them)")


def verdict_of(tags: list[str], labels: list[str] | None, label_tags: list[list[str]] | None,
               corrected: list[str] | None) -> tuple[str, list[str] | None] | None:
    """``(verdict, labels)`` of one sample from its tags, its OV labels with their tags and ``corrected``;
    None when it has no verdict (see the module docstring)."""
    model = None if labels is None else list(labels)  # None: no OV labels (the task failed or was not run)
    labels = model or []
    dropped = [WRONG_TAG in (t or []) for t in (label_tags or [[] for _ in labels])]
    corrected = [c for c in (corrected or []) if c and c.strip()]
    if WRONG_TAG in tags or any(dropped) or corrected:
        if corrected:
            return "wrong", corrected
        kept = [x for x, d in zip(labels, dropped) if not d]
        return "wrong", (kept if any(dropped) and kept else None)
    if OK_TAG in tags:
        return "ok", model
    return None


def pull(name: str, out: str | Path) -> PullSummary:
    """Write the verdicts of dataset ``name`` to ``out`` (CSV, one row per reviewed sample, by name)."""
    from features.labels import write_verdicts

    dataset = open_dataset(name)
    schema = dataset.get_field_schema()
    out = Path(out)
    get = dataset.values
    names, tags, stamps = get("name"), get("tags"), get("last_modified_at")
    has_ov = OV_FIELD in schema
    labels = get(f"{OV_FIELD}.classifications.label") if has_ov else [None] * len(names)
    label_tags = get(f"{OV_FIELD}.classifications.tags") if has_ov else [None] * len(names)
    corrected = get(CORRECTED_FIELD) if CORRECTED_FIELD in schema else [None] * len(names)
    rows = []
    summary = PullSummary(name, out)
    for n, t, lab, ltags, corr, stamp in zip(names, tags, labels, label_tags, corrected, stamps):
        found = verdict_of(t or [], lab, ltags, corr)
        if found is None:
            continue
        verdict, words = found
        when = stamp.replace(tzinfo=timezone.utc).isoformat(timespec="seconds") if stamp else ""
        rows.append({"name": n, "verdict": verdict, "labels": words, "tagged_at": when.replace("+00:00", "Z")})
        summary.ok += verdict == "ok"
        summary.wrong += verdict == "wrong"
        summary.with_labels += words is not None
    write_verdicts(rows, out)
    return summary
