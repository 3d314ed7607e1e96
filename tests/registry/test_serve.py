"""Serving a registered model with MLflow's own server, as the README says: `mlflow models serve` on
127.0.0.1 with the venv's bin on PATH (MLflow starts `uvicorn` by name), one request over HTTP, and the
answer is the model's own: each task's own new-token budget (a description runs past the signature's
old 64), the same text as generating in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, _free_port, _wait_http


@pytest.mark.slow
def test_mlflow_models_serve_answers_one_request(tiny_checkpoint, tmp_path, one_thread):
    import torch

    from core.config import load_config
    from modeling.generate import generate
    from modeling.sampling import DecodingSettings
    from registry.register import log_and_register
    from registry.resolve import load_model

    db = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config(None, [f"mlflow.tracking_uri={db}", "mlflow.registered_model=served"])
    assert log_and_register(tiny_checkpoint, cfg) is not None
    port = _free_port()
    venv_bin = Path(sys.executable).parent
    # The README's command: PATH="$PWD/.venv/bin:$PATH" .venv/bin/mlflow models serve ... --env-manager local
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "MLFLOW_TRACKING_URI": db}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(venv_bin / "mlflow"), "models", "serve", "-m", "models:/served@latest",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", proc, "mlflow models serve", timeout=240.0)
        g = np.random.default_rng(0)
        visual, audio = g.standard_normal((8, 768)).astype(np.float32), g.standard_normal((8, 64)).astype(np.float32)
        body = {"dataframe_records": [{"name": "clip1", "task": "description", "subtitle": "I never said that.",
                                       "visual": visual.tolist(), "audio": audio.tolist()}]}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=240) as resp:
            served = json.loads(resp.read())["predictions"][0]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()
    model, _ = load_model(str(tiny_checkpoint), device="cpu")
    want = generate(model, torch.as_tensor(visual)[None], torch.as_tensor(audio)[None], ["I never said that."],
                    ["description"], DecodingSettings().resolve(model.llm, "cpu"), [0])[0]
    assert served["text"] == want
    assert len(model.tokenizer(want)["input_ids"]) > 64  # the description's own budget, not the signature's 64
