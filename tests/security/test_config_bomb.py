"""Finding 10: a 476-byte YAML alias bomb exhausted 3 GiB through ``{value!r}`` in a config error.

The file nests nine lists of nine aliases under ``seed`` (an integer): its value has 9**9 leaves
when walked. Loading it must fail fast with a ConfigError naming the aliases, in bounded memory
(a child process under a 2 GiB address-space cap; its peak RSS is printed on failure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from core.errors import ConfigError
from tests.security.bounded import run_child


def alias_bomb(levels: int = 9) -> str:
    lines = ['  - &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"  - &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "seed:\n" + "\n".join(lines) + "\n"


def test_alias_bomb_fails_fast_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    assert path.stat().st_size < 600
    code = ("from core.config import load_config\nfrom core.errors import ConfigError\n"
            f"try:\n    load_config({str(path)!r})\nexcept ConfigError as exc:\n    print('ConfigError:', exc)\n")
    run = run_child(code, address_space_mb=2048, timeout_s=60)
    assert run.returncode == 0 and run.out.startswith("ConfigError:"), run.describe()
    assert run.peak_rss_mb < 400 and run.seconds < 30, run.describe()
    assert "YAML aliases" in run.out and len(run.out) < 1000, run.describe()


def test_a_few_aliases_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("train:\n  betas: &b [0.9, 0.95]\nscore: {}\n", encoding="utf-8")
    assert load_config(path).train.betas == (0.9, 0.95)


def test_huge_values_are_cut_in_error_messages(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("seed: [" + ",".join(["12345678"] * 100_000) + "]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"seed: expected an integer") as info:
        load_config(path)
    assert len(str(info.value)) < 500, len(str(info.value))


def test_deep_nesting_is_a_config_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("seed: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nests too deeply"):
        load_config(Path(path))
