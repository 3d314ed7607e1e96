"""What one streaming job did: the summary type that preprocessing and batch labeling both return.

`JobSummary` owns the counting: ok/failed outputs, failures by kind (`core.errors.error_kind`) with
the first error of each kind as its example, time to the first written part and the rate after it.
A job subclasses it for what only it knows (the store's specs, the model and tasks) and for its
heading lines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar, Iterable

from core.errors import error_kind

STATE_EXAMPLES = 10  # failed outputs of the whole state a summary names; the rest are counted


@dataclass
class JobSummary:
    """Counts, failures by kind (one example each) and speed of one run."""

    total: int = 0  # inputs considered
    skipped: int = 0  # inputs already done by an earlier run
    ok: int = 0  # outputs written ok in this run
    failed: int = 0  # outputs recorded as failed in this run
    failures: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    first_part_s: float = 0.0  # until the first part was written: Ray and actor start-up, model loads
    first_part_n: int = 0  # inputs in that first part
    # The output's whole state after the run (earlier runs' records included); -1: not known.
    state_ok: int = -1
    state_failed: int = -1
    # (name, error) of the first STATE_EXAMPLES failed outputs of that state: a rerun that processed
    # nothing still names them (affectflow.options.failure_gate).
    state_examples: list = field(default_factory=list)
    unit: ClassVar[str] = "samples"  # what the rate counts
    holder: ClassVar[str] = "output"  # what holds that state, for the report

    @property
    def processed(self) -> int:
        return self.ok + self.failed

    @property
    def failure_rate(self) -> float:
        return self.failed / self.processed if self.processed else 0.0

    @property
    def done(self) -> int:
        """Inputs handled in this run: what the rate counts."""
        return self.processed

    @property
    def per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_per_s(self) -> float:
        """Rate after the first part (start-up excluded); 0 when there was one part or none."""
        rest = self.seconds - self.first_part_s
        return (self.done - self.first_part_n) / rest if rest > 0 and self.first_part_n else 0.0

    @property
    def state_failure_rate(self) -> float:
        """Failed over all outputs recorded, this run's and earlier ones' (this run's rate if unknown)."""
        if self.state_ok < 0:
            return self.failure_rate
        total = self.state_ok + self.state_failed
        return self.state_failed / total if total else 0.0

    def state_line(self) -> str:
        """The whole state: a rerun that skipped earlier failures must not read as a clean run."""
        if self.state_ok < 0:
            return ""
        earlier = max(self.state_failed - self.failed, 0)
        line = (f"{self.holder} now: {self.state_ok} ok, {self.state_failed} failed "
                f"({100 * self.state_failure_rate:.2f}%)")
        if earlier:
            line += f"; {earlier} failed in an earlier run and stay recorded (--retry-failed retries them)"
        return line

    def first_part(self, inputs: int, t0: float) -> None:
        """Note the time since ``t0`` and the input count of the first part written (later calls do nothing)."""
        if not self.first_part_n:
            self.first_part_s, self.first_part_n = time.perf_counter() - t0, inputs

    def count(self, statuses: Iterable, errors: Iterable) -> None:
        """Count one part's outputs: ``ok``, or failed under the kind of its error."""
        for status, error in zip(statuses, errors):
            if status == "ok":
                self.ok += 1
            else:
                self.failed += 1
                kind = error_kind(str(error)) or "unknown"
                self.failures[kind] = self.failures.get(kind, 0) + 1
                self.examples.setdefault(kind, str(error))

    def failure_lines(self) -> list[str]:
        """One line per failure kind, most frequent first, with its example."""
        return [f"  {kind}: {n}   e.g. {self.examples.get(kind, '')[:160]}"
                for kind, n in sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0]))]

    def time_line(self) -> str:
        steady = f"; after start-up ({self.first_part_s:.1f}s) {self.steady_per_s:.2f} {self.unit}/s" \
            if self.steady_per_s else ""
        return f"time: {self.seconds:.1f}s, {self.per_s:.2f} {self.unit}/s{steady}"

    def lines(self) -> list[str]:
        """The report, line by line; subclasses put their own heading and counts first."""
        return [f"{self.unit}: {self.total} considered, {self.skipped} already done (skipped), "
                f"{self.processed} processed", f"ok: {self.ok}", f"failed: {self.failed}",
                *self.failure_lines(), *filter(None, [self.state_line()]), self.time_line()]

    def format(self) -> str:
        return "\n".join(self.lines())
