"""The console script: one entry point whose --help lists every subcommand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from affectflow.cli import build_parser


def test_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "affectflow.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("tiny-models", "synth-corpus", "demo", "config"):
        assert name in out


@pytest.mark.parametrize("name", ["tiny-models", "synth-corpus", "demo", "config"])
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([name, "--help"])
    assert done.value.code == 0
    assert "usage" in capsys.readouterr().out
