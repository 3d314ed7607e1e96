"""The MLflow pyfunc flavour of AffectGPT: our own loader over the trainable checkpoint.

Not ``mlflow.pytorch.log_model``: that saves a torch.export program whose batch dimension is
frozen to the example's. Artifacts: ``checkpoint`` (adapter + fusion + spec),
``base_llm`` (the base LLM folder, unless logged with ``--no-bundle-base``) and ``bundle``
(a JSON with the recorded base LLM path and provenance). Loading needs this package installed.

Logged from code (:data:`MODEL_CODE`, MLflow's models-from-code): the model folder holds no
pickle. A served request is bounded (:data:`SERVED_LIMITS`): rows per request, new and prompt
tokens, the static cache's size, and each subtitle's length; a request past a limit is refused
(HTTP 400 from ``mlflow models serve``) naming the limit, before anything is generated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow.pyfunc

from registry.resolve import BASE_ARTIFACT, BUNDLE_ARTIFACT, CKPT_ARTIFACT, ENV_BASE_LLM, ResolvedModel, load_model

# The file MLflow runs to build the served model (models-from-code).
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
# What one served request may ask for. 1,200 new tokens is the release's budget for any task and
# 2,000 the length it generates within; a cache row holds a prompt and its answer.
SERVED_LIMITS = {"rows": 64, "max_new_tokens": 1200, "max_prompt_tokens": 2000, "cache_rows": 64,
                 "cache_tokens": 3200}


def check_request(n_rows: int, settings) -> None:
    """Refuse a served request past :data:`SERVED_LIMITS` (``MlflowException`` INVALID_PARAMETER_VALUE,
    which ``mlflow models serve`` answers with HTTP 400), naming the value and its limit."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    asked = {"rows": n_rows, **{k: getattr(settings, k) for k in SERVED_LIMITS if k != "rows"}}
    for key, value in asked.items():
        if value > SERVED_LIMITS[key]:
            what = "rows in one request" if key == "rows" else key
            raise MlflowException(f"{what}: {value} is over this model's limit of {SERVED_LIMITS[key]}"
                                  + (" (send fewer rows per request)" if key == "rows" else ""),
                                  error_code=INVALID_PARAMETER_VALUE)


class AffectGPTPyfunc(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame)``: columns ``visual`` ([8, Dv]), ``audio`` ([8, Da]), ``subtitle`` and
    optional ``task`` (a named task, default ov), ``question`` (your own) and ``name``; returns
    ``text`` and ``labels``.

    Params (:func:`signature`): the decoding settings of ``label`` (``decoding``, ``max_new_tokens``
    0 = each task's own budget, ``do_sample``, ``temperature``, ``top_p``, ``backend``, ``dtype`` ...) with the
    same defaults, and ``seed`` (sampling seeds per name+task), so a served model answers as ``label`` does.
    The model is loaded in ``model_config={"dtype": ...}`` (default ``auto``), which a request's ``dtype``
    ``auto`` keeps; a request asking for another precision loads it again in that one.
    """

    def load_context(self, context):
        arts = context.artifacts
        bundle = {}
        if BUNDLE_ARTIFACT in arts and Path(arts[BUNDLE_ARTIFACT]).is_file():
            bundle = json.loads(Path(arts[BUNDLE_ARTIFACT]).read_text(encoding="utf-8"))
        base = os.environ.get(ENV_BASE_LLM) or arts.get(BASE_ARTIFACT) or bundle.get("base_llm_path", "")
        self.resolved = ResolvedModel("pyfunc", "pyfunc", "", arts[CKPT_ARTIFACT], str(base or ""))
        self.dtype = ""
        self.default_dtype = str((getattr(context, "model_config", None) or {}).get("dtype", "auto"))
        self._load(self.default_dtype)

    def _load(self, dtype: str) -> None:
        """Hold the model in ``dtype`` (as ``modeling.checkpoint.pick_dtype`` resolves it), loading it if needed."""
        from core.runtime import pick_device
        from modeling.checkpoint import pick_dtype, read_spec

        want = pick_dtype(dtype, read_spec(self.resolved.checkpoint), pick_device("auto"))
        if want != self.dtype:
            self.model = None  # one copy at a time
            self.model, _ = load_model(self.resolved, dtype=want)
            self.dtype = want

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd
        import torch

        from modeling.generate import generate
        from modeling.prompt import question_for
        from modeling.sampling import DecodingSettings, sample_seed
        from pipelines.stages import clean_subtitle
        from scoring.parse import parse_template

        params = dict(params or {})
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        settings = DecodingSettings.from_params(params)
        check_request(len(df), settings)
        self._load(self.default_dtype if settings.dtype == "auto" else settings.dtype)
        device = next(self.model.fusion.parameters()).device
        cfg = settings.resolve(self.model.llm, device)

        def stack(col):
            return torch.as_tensor(np.stack([np.asarray(np.stack(list(v)) if isinstance(v, (list, np.ndarray))
                                                        and len(v) and not np.isscalar(v[0]) else v, np.float32)
                                             for v in df[col]]))

        n = len(df)
        tasks = [str(t) for t in df["task"]] if "task" in df else ["ov"] * n
        # Cut before anything tokenizes them, as preprocessing stores them (pipelines.stages.MAX_SUBTITLE_CHARS).
        subs = [clean_subtitle(s) for s in df["subtitle"]] if "subtitle" in df else [""] * n
        names = [str(x) for x in df["name"]] if "name" in df else [str(i) for i in range(n)]
        seed = int(params.get("seed", 0))
        questions = None
        if "question" in df:  # a row's own question; its task then only sets its new-token budget
            asked = ["" if q is None else str(q) for q in df["question"]]
            questions = [q or question_for(t) for q, t in zip(asked, tasks)]
        texts = generate(self.model, stack("visual"), stack("audio"), subs, tasks, cfg,
                         [sample_seed(seed, nm, t) for nm, t in zip(names, tasks)], questions)
        return pd.DataFrame({"text": texts, "labels": [parse_template(t) for t in texts]})


def signature():
    """The served model's signature: no fixed input schema, and the decoding settings as params with
    ``label``'s defaults (MLflow fills a missing param with its default, so these must be label's)."""
    from dataclasses import fields

    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from modeling.sampling import DecodingSettings

    kinds = {bool: "boolean", int: "long", float: "double", str: "string"}
    defaults = DecodingSettings()
    specs = [ParamSpec(f.name, kinds[type(getattr(defaults, f.name))], getattr(defaults, f.name))
             for f in fields(DecodingSettings)]
    return ModelSignature(inputs=None, outputs=None, params=ParamSchema([*specs, ParamSpec("seed", "long", 0)]))
