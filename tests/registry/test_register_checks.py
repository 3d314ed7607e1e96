"""Registration refuses a broken checkpoint before anything reaches MLflow: a non-finite weight is named,
and weights that are finite but give a non-finite forward pass (about 1e30, as lr 1e30 leaves them) are
refused naming the first module whose output is not finite."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file


def _tampered(tiny_checkpoint, tmp_path, how: str):
    ckpt = tmp_path / "run" / "ray" / "train" / "step_00000001"
    shutil.copytree(tiny_checkpoint, ckpt)
    path = ckpt / "fusion.safetensors"
    weights = load_file(str(path))
    if how == "inf":
        weights["multi_proj.weight"][0, 3] = float("inf")
    else:  # what one AdamW step at lr 1e30 does: every weight about +-1e30, all finite
        weights = {k: torch.where(v >= 0, 1e30, -1e30) for k, v in weights.items()}
    save_file(weights, str(path))
    return ckpt


@pytest.mark.parametrize("how, message", [
    ("inf", "is not registered: weight multi_proj.weight (fusion.safetensors) holds 1 non-finite value(s)"),
    ("huge", "is not registered: its forward pass on a sample gives loss=nan (the output of "),
])
def test_register_refuses_a_broken_checkpoint(how, message, tiny_checkpoint, tmp_path, capsys, one_thread):
    from mlflow.tracking import MlflowClient

    from affectflow.cli import main

    ckpt = _tampered(tiny_checkpoint, tmp_path, how)
    assert all(torch.isfinite(v).all() for v in load_file(str(ckpt / "fusion.safetensors")).values()) == (how == "huge")
    db = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["register", str(ckpt), "--mlflow-uri", db]) == 2
    err = capsys.readouterr().err
    assert f"affectflow register: error: {ckpt} {message}" in err, err
    if how == "huge":
        assert "fusion" in err.split("the output of ")[1].split(" ")[0]  # the first module to go non-finite
    assert not MlflowClient(db, db).search_registered_models()
