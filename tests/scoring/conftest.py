"""Scoring tests' shared pieces: lines a test reports in the terminal summary (shown without -s)."""

from __future__ import annotations

import pytest

_REPORT = pytest.StashKey[list]()


@pytest.fixture
def report_line(request):
    """``report_line(text)``: print ``text`` in the run's terminal summary, under "scoring"."""
    return request.config.stash.setdefault(_REPORT, []).append


def pytest_terminal_summary(terminalreporter, config):
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("scoring")
        for line in lines:
            terminalreporter.write_line(line)
