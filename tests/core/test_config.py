"""The typed config: loading, overrides, validation messages, every shipped YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectflow.cli import main
from core.config import Config, load_config
from core.errors import ConfigError


def test_defaults_are_a_config():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.seed == 42
    assert cfg.train.lr == pytest.approx(1e-5)
    assert cfg.model.lora_r == 16 and cfg.model.lora_alpha == 32


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_yaml_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_overrides_are_typed():
    cfg = load_config(None, ["train.lr=2e-5", "train.workers=2", "label.do_sample=true", "model.preset=qwen2.5-7b"])
    assert cfg.train.lr == pytest.approx(2e-5)
    assert cfg.train.workers == 2
    assert cfg.label.do_sample is True
    assert cfg.model.preset == "qwen2.5-7b"


def test_override_beats_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  lr: 3.0e-5\n  epochs: 4\n")
    cfg = load_config(f, ["train.epochs=7"])
    assert cfg.train.lr == pytest.approx(3e-5) and cfg.train.epochs == 7


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.lrr=1", "train.lrr"),
        ("train.lr=fast", "train.lr"),
        ("train.workers=1.5", "train.workers"),
        ("model.preset=huge", "model.preset"),
        ("label.do_sample=maybe", "label.do_sample"),
        ("train.zero_stage=5", "zero_stage"),
        ("nosuchsection.x=1", "nosuchsection"),
        ("novalue", "novalue"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_bad_file_is_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(f)
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    f.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.epochs.*many"):
        load_config(f)


def test_config_show_prints_resolved_yaml(capsys):
    assert main(["config", "show", "--set", "train.lr=4e-5", "--set", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert "lr: 4.0e-05" in out and "seed: 7" in out


def test_config_show_reports_bad_key(capsys):
    assert main(["config", "show", "--set", "train.nope=1"]) == 2
    assert "train.nope" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("train.lr=nan", "train.lr: expected a finite number, got 'nan'"),
    ("train.weight_decay=inf", "train.weight_decay: expected a finite number"),
    ("train.betas=1", "train.betas: expected 2 values, got 1"),
    ("train.betas=[1,2,3]", "train.betas: expected 2 values, got 3"),
    ("train.betas=[0.9,1.5]", "betas must be two numbers within [0, 1)"),
    ("train.grad_clip=-5", "grad_clip must be >= 0"),
    ("train.warmup_steps=-10", "warmup_steps must be >= 0"),
    ("train.weight_decay=-0.1", "weight_decay must be >= 0"),
    ("train.max_bad_steps=0", "max_bad_steps must be >= 1"),
    ("label.temperature=-1", "temperature must be > 0"),
    ("label.valence_range=[-1]", "valence_range must be [low, high]"),
    ("seed=-1", "seed must be >= 0"),
])
def test_values_outside_their_range_fail_at_load(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_duplicate_yaml_keys_and_non_utf8_files_are_errors(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("seed: 1\ntrain:\n  lr: 2.0e-5\n  workers: 1\n  lr: 3.0e-5\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml.*duplicate key 'lr' on line 5 \(first on line 3\)"):
        load_config(dup)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("seed: 1\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.yaml.*is not UTF-8 text"):
        load_config(latin)
    fine = tmp_path / "fine.yaml"
    fine.write_text("seed: 1\ntrain:\n  lr: 2.0e-5\nlabel:\n  task: ov\n")
    assert load_config(fine).train.lr == 2e-5


def test_score_section_modes():
    cfg = load_config()
    assert (cfg.score.sentiment, cfg.score.extract) == ("rules", "llm")
    cfg = load_config(None, ["score.sentiment=llm", "score.extract=rules"])
    assert (cfg.score.sentiment, cfg.score.extract) == ("llm", "rules")
    with pytest.raises(ConfigError, match=r"score.sentiment: 'vote' is not one of \['rules', 'llm'\]"):
        load_config(None, ["score.sentiment=vote"])
    with pytest.raises(ConfigError, match="score.extract"):
        load_config(None, ["score.extract=regex"])
    from core.sections import ScoreConfig

    with pytest.raises(ConfigError, match="sentiment must be rules or llm, got 'vote'"):
        ScoreConfig(sentiment="vote").validate()
