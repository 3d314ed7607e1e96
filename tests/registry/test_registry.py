"""MLflow: log + register a checkpoint, load models:/NAME@ALIAS in a fresh process, an unreachable server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.config import load_config
from core.tracking import tracking_uri
from modeling.checkpoint import find_checkpoint
from registry.register import log_and_register
from registry.resolve import resolve_model
from tests.conftest import REPO, _free_port
from tests.fixtures.inference import build_checkpoint


@pytest.fixture
def checkpoint_with_state(tiny_checkpoint, tmp_path):
    """The tiny checkpoint plus a (fake) DeepSpeed state folder, as the trainer leaves it."""
    ckpt = tmp_path / "run" / "ray" / "train" / "step_00000004"
    shutil.copytree(tiny_checkpoint, ckpt)
    (ckpt / "deepspeed" / "state").mkdir(parents=True)
    (ckpt / "deepspeed" / "state" / "optim.pt").write_bytes(b"\0" * 1024)
    (ckpt / "train_state.json").write_text(json.dumps({"step": 4}))
    return ckpt


FRESH = textwrap.dedent("""
    import json, sys
    import mlflow, numpy as np, pandas as pd, torch
    torch.set_num_threads(1)
    uri, cache = sys.argv[1], sys.argv[2]
    from modeling.generate import generate
    from modeling.sampling import GenerationConfig
    from registry.resolve import load_model
    model, res = load_model("models:/affectgpt@latest", tracking_uri=uri, cache_dir=cache)
    g = torch.Generator().manual_seed(0)
    v, a = torch.randn(2, 8, 768, generator=g), torch.randn(2, 8, 64, generator=g)
    texts = generate(model, v, a, ["hi", "there"], ["ov", "description"], GenerationConfig(max_new_tokens=6))
    mlflow.set_tracking_uri(uri)
    pyf = mlflow.pyfunc.load_model("models:/affectgpt@latest")
    df = pd.DataFrame({"visual": list(v.numpy()), "audio": list(a.numpy()), "subtitle": ["hi", "there"],
                       "task": ["ov", "description"]})
    out = pyf.predict(df, params={"max_new_tokens": 6})
    print(json.dumps({"version": res.version, "model_uri": res.model_uri, "texts": texts,
                      "pyfunc": list(out["text"]), "columns": list(out.columns),
                      "files": sorted(p.name for p in __import__("pathlib").Path(res.checkpoint).iterdir())}))
""")


@pytest.mark.slow
def test_register_then_load_by_alias_in_a_fresh_process(mlflow_server, checkpoint_with_state, tmp_path, capsys):
    cfg = load_config(None, [f"mlflow.tracking_uri={mlflow_server}"])
    first = log_and_register(checkpoint_with_state, cfg)
    assert first is not None and first.model_uri == "models:/affectgpt@latest"
    assert first.bundled_base  # the tiny base LLM always travels with the model
    # A second registration (run folder given: its latest checkpoint) becomes the new @latest;
    # a named alias is set on it and pinned to its version when resolved.
    second = log_and_register(checkpoint_with_state.parents[2],
                              load_config(None, [f"mlflow.tracking_uri={mlflow_server}", "mlflow.alias=champion"]))
    assert int(second.version) == int(first.version) + 1
    pinned = resolve_model("models:/affectgpt@champion", tracking_uri=mlflow_server, download=False)
    assert (pinned.model_uri, pinned.version) == (f"models:/affectgpt/{second.version}", second.version)
    assert "[register] models:/affectgpt@champion" in capsys.readouterr().out

    proc = subprocess.run([sys.executable, "-c", FRESH, mlflow_server, str(tmp_path / "cache")], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["version"] == second.version and got["model_uri"] == f"models:/affectgpt/{second.version}"
    assert got["pyfunc"] == got["texts"] and all(got["texts"]) and got["columns"] == ["text", "labels"]
    assert "deepspeed" not in got["files"]  # optimizer state is not part of the model
    assert {"adapter", "fusion.safetensors", "affectflow_model.json"} <= set(got["files"])


def test_unreachable_server_keeps_the_checkpoint_and_prints_the_command(tiny_checkpoint, capsys):
    from affectflow.cli import main

    dead = f"http://127.0.0.1:{_free_port()}"
    cfg = load_config(None, [f"mlflow.tracking_uri={dead}"])
    assert log_and_register(tiny_checkpoint, cfg) is None
    out = capsys.readouterr().out
    assert "unreachable" in out and f"kept at {tiny_checkpoint}" in out
    assert f"affectflow register {tiny_checkpoint} --mlflow-uri {dead} --name affectgpt --alias latest" in out
    assert (tiny_checkpoint / "affectflow_model.json").is_file()
    assert main(["register", str(tiny_checkpoint), "--mlflow-uri", dead]) == 1
    assert "affectflow register" in capsys.readouterr().out


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = load_config().mlflow.tracking_uri
    assert tracking_uri(default).startswith("sqlite:////")  # relative sqlite made absolute
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_uri(default) == "http://env:5000"  # env beats the built-in default
    assert tracking_uri("http://cfg:5000") == "http://cfg:5000"  # an explicit config value beats env
    assert tracking_uri(default, "http://flag:5000") == "http://flag:5000"


def test_model_references(tiny_checkpoint, tmp_path):
    from core.errors import ModelRefError

    run = tmp_path / "run"
    for step in (2, 10, 3):
        ckpt = build_checkpoint_copy(tiny_checkpoint, run / f"step_{step:08d}")
        (ckpt / "train_state.json").write_text(json.dumps({"step": step}))
    assert find_checkpoint(run).name == "step_00000010"
    assert resolve_model(str(tiny_checkpoint)).checkpoint == str(tiny_checkpoint.resolve())
    with pytest.raises(ModelRefError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelRefError, match="no AffectFlow checkpoint"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelRefError, match="models:/NAME@ALIAS"):
        resolve_model("models:/a/b/c", tracking_uri="sqlite:///" + str(tmp_path / "x.db"), download=False)


def build_checkpoint_copy(src, dst):
    shutil.copytree(src, dst)
    return dst


ROUND = textwrap.dedent("""
    import sys
    from core.config import load_config
    from registry.resolve import resolve_model
    from registry.register import log_and_register
    uri, ckpt, cache = sys.argv[1:4]
    assert log_and_register(ckpt, load_config(None, [f"mlflow.tracking_uri={uri}"])).version == "1"
    print(resolve_model("models:/affectgpt/1", tracking_uri=uri, cache_dir=cache).checkpoint)
""")


@pytest.mark.slow
def test_a_recreated_registry_never_serves_a_cached_model(tiny_models, tmp_path):
    """Version 1 of a fresh registry is another model than version 1 of the one it replaced
    (the demo recreates its sqlite registry on every run; the download cache outlives it)."""
    from safetensors.torch import load_file

    db, cache, fusion = tmp_path / "mlflow.db", tmp_path / "cache", []
    for seed in (0, 1):
        db.unlink(missing_ok=True)  # the registry is recreated: numbering starts again at 1
        ckpt = build_checkpoint(tiny_models["llm"], tmp_path / f"ckpt{seed}", seed=seed)
        out = subprocess.run([sys.executable, "-c", ROUND, f"sqlite:///{db}", str(ckpt), str(cache)], cwd=tmp_path,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode == 0, out.stderr[-2000:]
        fusion.append(load_file(str(Path(out.stdout.strip().splitlines()[-1]) / "fusion.safetensors")))
    assert any(not (fusion[0][k] == fusion[1][k]).all() for k in fusion[0])
