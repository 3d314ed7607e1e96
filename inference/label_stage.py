"""The labeling actor: a Ray Data stage that holds the model once and generates for a batch of samples.

`pipelines.operators.label` turns :class:`LabelStage` into an actor pool; the stage itself does
not know Ray. Output rows follow `inference.table.COLUMNS`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.errors import InputError
from inference.table import FAILED, OK
from modeling.prompt import QUESTION_TASK, TASKS, question_for

PROMPT_TOO_LONG = "prompt/too-long"
CACHE_TOO_LONG = "cache/too-long"


def resolve_asks(task: str, question: str = "", labels: Sequence[str] = (),
                 valence_range: Sequence[float] = (-1.0, 1.0)) -> list[tuple[str, str]]:
    """``(task, question)`` pairs to ask of every sample.

    ``question`` (your own) wins: one pair, task ``question``. Else ``task`` is a named task, ``both``
    (ov and description) or a comma list of named tasks, each asked its released question.
    """
    if question and question.strip():
        return [(QUESTION_TASK, question.strip())]
    names = ["ov", "description"] if task == "both" else [t.strip() for t in task.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if not names or unknown:
        raise InputError(f"--task {task!r}: expected one of {', '.join(TASKS)}, both, or a comma list of them "
                         "(or ask your own with --question)")
    low, high = valence_range
    return [(t, question_for(t, labels, (float(low), float(high)))) for t in dict.fromkeys(names)]


@dataclass(frozen=True)
class StageSpec:
    """What every labeling actor is built from, resolved once by the job (and pickled to each actor)."""

    resolved: dict  # `registry.resolve.ResolvedModel` fields: the pinned model
    asks: Sequence[Sequence[str]]  # (task, question) pairs asked of every sample
    generation: dict  # the resolved `modeling.sampling.GenerationConfig` fields the job decodes (and records) with
    seed: int
    visual_key: str  # the visual column: ``visual`` from a store, ``face`` or ``frame`` from the encoders
    tracking_uri: str | None = None  # where another node of a cluster fetches an MLflow model
    device: str = "auto"  # as the job resolved it
    dtype: str = "auto"  # as the job resolved it
    torch_threads: int | None = 1


class LabelStage:
    """Ray Data actor: loads the model once, turns a batch of samples into (sample x task) output rows.

    Input columns: ``name``, ``subtitle``, the visual column (``visual`` from a store, ``face``
    or ``frame`` from the encoders), ``audio``, and optional ``status``/``error`` (a sample that
    failed upstream becomes a failed row). Never raises: a generation error fails its batch's rows.
    """

    def __init__(self, spec: StageSpec):
        import torch

        from modeling.sampling import GenerationConfig
        from registry.resolve import ResolvedModel, is_mlflow_uri, load_model, resolve_model

        if spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
        res = ResolvedModel(**spec.resolved)
        if not Path(res.checkpoint).is_dir() and is_mlflow_uri(res.model_uri):
            # Another node of a cluster: fetch the pinned version into this node's cache.
            res = dataclasses.replace(resolve_model(res.model_uri, tracking_uri=spec.tracking_uri,
                                                    llm_path=res.llm_path or None), ref=res.ref)
        self.model, self.resolved = load_model(res, device=spec.device, dtype=spec.dtype)
        self.asks = {str(t): str(q) for t, q in spec.asks}
        self.tasks = list(self.asks)
        self.config = GenerationConfig(**spec.generation)
        self.seed = spec.seed
        self.visual_key = spec.visual_key

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from modeling.generate import clean_output, generate_raw, task_budget
        from modeling.sampling import sample_seed
        from scoring.parse import parse_template

        n = len(batch["name"])
        names = [str(x) for x in batch["name"]]
        status = [str(s) for s in batch["status"]] if "status" in batch else [OK] * n
        errors = [str(e) for e in batch["error"]] if "error" in batch else [""] * n
        subs = ["" if s is None else str(s) for s in batch.get("subtitle", [""] * n)]
        rows = [(i, t) for i in range(n) for t in self.tasks]
        text = {r: "" for r in rows}
        labels: dict[tuple, Any] = {r: None for r in rows}
        st = {r: status[r[0]] for r in rows}
        err = {r: errors[r[0]] if status[r[0]] != OK else "" for r in rows}
        cut = {r: 0 for r in rows}
        todo = [r for r in rows if status[r[0]] == OK]
        if todo:
            idx = [i for i, _ in todo]
            try:
                texts, decoded = generate_raw(
                    self.model, np.asarray(batch[self.visual_key], np.float32)[idx],
                    np.asarray(batch["audio"], np.float32)[idx], [subs[i] for i in idx], [t for _, t in todo],
                    self.config, [sample_seed(self.seed, names[i], t) for i, t in todo],
                    questions=[self.asks[t] for _, t in todo],
                )
                for r, raw, d in zip(todo, texts, decoded):
                    cut[r] = d.subtitle_cut
                    if d.finish == "prompt-too-long":
                        st[r], err[r] = FAILED, (f"{PROMPT_TOO_LONG}: the prompt is over "
                                                 f"{self.config.max_prompt_tokens} tokens even without the "
                                                 "subtitle (a shorter --question, or raise label.max_prompt_tokens)")
                        continue
                    if d.finish == "cache-too-long":
                        budget = task_budget(r[1], self.config)
                        st[r], err[r] = FAILED, (f"{CACHE_TOO_LONG}: the prompt and the {budget}"
                                                 "-token answer budget exceed the static cache's "
                                                 f"{self.config.cache_tokens} tokens per row (raise "
                                                 "label.cache_tokens, or 0 for the prompt budget + the answer budget)")
                        continue
                    out = clean_output(raw)
                    text[r], labels[r] = out, parse_template(out)
            except Exception as exc:  # noqa: BLE001 - recorded as data, the job goes on
                for r in todo:
                    st[r], err[r] = FAILED, f"generate/{type(exc).__name__}: {str(exc)[:300]}"
        obj = lambda xs: np.array(list(xs) + [None], dtype=object)[:-1]  # noqa: E731 - 1-D object array
        return {
            "name": obj(names[i] for i, _ in rows),
            "task": obj(t for _, t in rows),
            "question": obj(self.asks[t] for _, t in rows),
            "text": obj(text[r] for r in rows),
            "labels": obj(json.dumps(labels[r]) for r in rows),
            "model_uri": obj(self.resolved.model_uri for _ in rows),
            "model_version": obj(self.resolved.version for _ in rows),
            "status": obj(st[r] for r in rows),
            "error": obj(err[r] for r in rows),
            "subtitle_cut": np.array([cut[r] for r in rows], dtype=np.int32),
        }
