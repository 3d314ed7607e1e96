"""Finding 1: resuming a run could execute code. DeepSpeed loads its checkpoint files with
``torch.load(weights_only=False)``; a planted ``mp_rank_00_model_states.pt`` ran ``os.system`` on
``--resume``. Now the run folder is checked before anything starts (`check_resume_files`) and
DeepSpeed loads through a weights-only engine (`weights_only_engine`): the payload never runs,
nothing trains, and a clean checkpoint still resumes to the uninterrupted run's losses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.errors import TrainingError
from synth.features import SyntheticFeatures
from training.loop import LoopHooks, check_resume_files, run_loop, single_process, weights_only_engine


class Payload:
    """What an attacker with write access to a shared run folder plants: a pickle that runs a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def config(zero: int, steps: int):
    return load_config(None, [
        "train.global_batch_size=2", "train.micro_batch_size=1", "train.workers=1", "train.checkpoint_every=2",
        "train.max_tokens=128", "train.progress=false", f"train.zero_stage={zero}", f"train.steps_per_epoch={steps}",
        "train.epochs=1", "train.lr=1e-3"])


def features():
    return SyntheticFeatures(4, 768, 64, seed=1)


def train_steps(tiny_models, root: Path, zero: int, steps: int, resume: Path | None = None):
    with single_process():
        return run_loop(config(zero, steps), features(), tiny_models["llm"],
                        LoopHooks(checkpoint_root=str(root), resume_from=str(resume) if resume else None,
                                  metrics_path=str(root / "metrics.jsonl")))


@pytest.fixture(scope="module")
def zero2_run(tiny_models, tmp_path_factory):
    """Two steps of ZeRO-2 with a checkpoint at step 2 (the run a resume continues)."""
    root = tmp_path_factory.mktemp("resume-z2")
    result = train_steps(tiny_models, root, 2, 2)
    return Path(result.last_checkpoint)


def plant(checkpoint: Path, where: Path, marker: Path) -> Path:
    """A copy of ``checkpoint`` at ``where`` whose model-states file is a pickle payload."""
    shutil.copytree(checkpoint, where)
    target = next((where / "deepspeed").rglob("*model_states.pt"))
    torch.save({"module": Payload(marker), "dp_world_size": 1}, target)
    return target


def test_a_planted_pickle_is_refused_and_nothing_runs(tiny_models, zero2_run, tmp_path):
    marker = tmp_path / "pwned"
    planted = plant(zero2_run, tmp_path / "step_00000002", marker)
    with pytest.raises(TrainingError, match=rf"refused to resume from {planted}.*system"):
        check_resume_files(tmp_path / "step_00000002")
    out = tmp_path / "resumed"
    out.mkdir()
    with pytest.raises(TrainingError, match="refused to resume"):
        train_steps(tiny_models, out, 2, 4, resume=tmp_path / "step_00000002")
    assert not marker.exists()
    assert not (out / "metrics.jsonl").exists() or (out / "metrics.jsonl").read_text() == ""  # no step ran
    assert not list(out.glob("step_*"))


def test_the_loading_engine_itself_refuses_the_payload(zero2_run, tmp_path):
    """Past the check (a file swapped after it), DeepSpeed's loads still cannot run the payload."""
    marker = tmp_path / "pwned"
    planted = plant(zero2_run, tmp_path / "ckpt", marker)
    with pytest.raises(TrainingError, match=rf"refused to resume from {planted}"):
        weights_only_engine(None).load(str(planted), map_location="cpu")
    assert not marker.exists()


def test_cli_resume_refuses_before_anything_starts(tiny_models, zero2_run, tmp_path, capsys):
    from affectflow.cli import main

    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    planted = plant(zero2_run, out / "ray" / "train" / "step_00000002", marker)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code = main(["train", "--resume", "--out", str(out), "--store", str(tmp_path / "no-store.zarr"),
                 "--models", str(Path(tiny_models["llm"]).parent), "--no-track"])
    err = capsys.readouterr().err
    assert code == 2 and f"refused to resume from {planted}" in err, err
    assert not marker.exists()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written, nothing trained


@pytest.mark.parametrize("zero", [2, 3])
def test_a_clean_checkpoint_resumes_to_the_uninterrupted_losses(tiny_models, tmp_path, zero):
    """Stop at step 2, resume to 4: steps 3-4 equal a run that never stopped (the optimizer and
    schedule state came back through the weights-only loads)."""
    whole = train_steps(tiny_models, tmp_path / "whole", zero, 4)
    ckpt = tmp_path / "whole" / "step_00000002"
    check_resume_files(ckpt)
    resumed = train_steps(tiny_models, tmp_path / "second", zero, 4, resume=ckpt)
    assert resumed.resumed_from_step == 2 and resumed.step == 4
    assert [h["step"] for h in resumed.history] == [3, 4]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in whole.history[2:]], rel=1e-5)
