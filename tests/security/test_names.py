"""Finding 11: reads outside the intended folders. One name check (`core.paths.name_problem`) for
every layout and reader, and artifact paths that must stay under their root (`core.paths.inside_root`).

Each test plants a real file outside the root at the place a hostile name points to, and shows
the reader neither returns nor opens it: the row fails, naming why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.errors import InputError, ModelRefError
from core.paths import inside_root, name_problem
from modeling.checkpoint import SPEC_FILE
from pipelines.manifest import read_mer2025, read_unibench
from registry.resolve import bundle_paths


@pytest.mark.parametrize("name", ["..", "../../x", "/etc/passwd", "a/b", "a\\b", "", " x", "x\x00", "..x"])
def test_bad_names_have_a_reason(name):
    assert name_problem(name)


@pytest.mark.parametrize("name", ["sample_00000001", "Ses05F_impro01_F000", "dia0_utt1", "a.b"])
def test_good_names_pass(name):
    assert name_problem(name) == ""


def test_mer2025_video_stem_dotdot_fails_its_row(tmp_path):
    """``video/...mp4`` has the stem ``..``: its face path would be ``openface_face/../...npy``."""
    root = tmp_path / "corpus"
    (root / "video").mkdir(parents=True)
    (root / "video" / "good.mp4").write_bytes(b"x")
    (root / "video" / "...mp4").write_bytes(b"x")
    rows = {r.name: r for r in read_mer2025(root)}
    assert set(rows) == {"..", "good"}
    assert rows[".."].error.startswith("manifest/bad-name"), rows[".."]
    assert rows["good"].error == "" and rows["good"].face.endswith("openface_face/good/good.npy")


def _ovmerd(root: Path, names: list[str]) -> Path:
    folder = root / "ovmerdplus-process"
    (folder / "video").mkdir(parents=True)
    rows = "".join(f'"{n}","[happy]"\n' for n in names)
    (folder / "ovlabel.csv").write_text("name,openset\n" + rows, encoding="utf-8")
    (folder / "subtitle_chieng.csv").write_text("name,english\n" + "".join(f'"{n}",hi\n' for n in names),
                                                encoding="utf-8")
    return folder


def test_unibench_gold_names_cannot_reach_outside_files(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"not yours")
    absolute = str(outside / "secret")  # an absolute gold name: video_dir / "/abs" is "/abs"
    folder = _ovmerd(tmp_path / "bench", ["ok_1", "../../../outside/secret", absolute])
    (folder / "video" / "ok_1.mp4").write_bytes(b"x")
    rows = {r.name: r for r in read_unibench("OVMERDPlus", tmp_path / "bench")}
    for name in ("../../../outside/secret", absolute):
        row = rows[name]
        assert row.video == "" and row.face == "" and row.audio == "", row
        assert row.error.startswith("manifest/bad-name") and "ovlabel.csv" in row.error, row.error
    assert rows["ok_1"].video.endswith("ok_1.mp4") and not rows["ok_1"].error


def _mlmodel(model_dir: Path, path: str) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    meta = {"flavors": {"python_function": {"artifacts": {"checkpoint": {"path": path}}}}}
    (model_dir / "MLmodel").write_text(yaml.safe_dump(meta), encoding="utf-8")


@pytest.mark.parametrize("path", ["../planted", "{abs}"])
def test_mlmodel_artifact_path_must_stay_in_the_model_folder(tmp_path, path):
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / SPEC_FILE).write_text("{}", encoding="utf-8")
    model_dir = tmp_path / "model"
    _mlmodel(model_dir, path.format(abs=planted))
    with pytest.raises(ModelRefError, match="artifact 'checkpoint'"):
        bundle_paths(model_dir)


def test_mlmodel_artifact_symlink_leaving_the_folder_is_refused(tmp_path):
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / SPEC_FILE).write_text("{}", encoding="utf-8")
    model_dir = tmp_path / "model"
    _mlmodel(model_dir, "artifacts/checkpoint")
    (model_dir / "artifacts").mkdir()
    (model_dir / "artifacts" / "checkpoint").symlink_to(planted)
    with pytest.raises(ModelRefError, match="leaves"):
        bundle_paths(model_dir)


def test_mlmodel_artifact_inside_the_folder_resolves(tmp_path):
    model_dir = tmp_path / "model"
    _mlmodel(model_dir, "artifacts/checkpoint")
    (model_dir / "artifacts" / "checkpoint").mkdir(parents=True)
    (model_dir / "artifacts" / "checkpoint" / SPEC_FILE).write_text("{}", encoding="utf-8")
    ckpt, base, info = bundle_paths(model_dir)
    assert ckpt == (model_dir / "artifacts" / "checkpoint").resolve() and base is None and info == {}


def test_inside_root_refuses_climbing_and_absolute(tmp_path):
    assert inside_root(tmp_path, "a/b", "x") == (tmp_path / "a" / "b").resolve()
    for bad in ("../x", "/etc", "a/../../x", ""):
        with pytest.raises(InputError):
            inside_root(tmp_path, bad, "x")
