"""The architecture, checked: every module imports only layers below it, and no other module's ``_private`` name.

Layers, bottom to top (a package may import its own modules and any lower package):

    core -> features -> scoring -> pipelines -> training -> registry -> inference -> synth -> affectflow

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "features", "scoring", "pipelines", "training", "registry", "inference", "synth", "affectflow")
RANK = {name: i for i, name in enumerate(LAYERS)}


def _modules() -> list[Path]:
    return sorted(p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every absolute import in ``path`` (``names`` empty for ``import x``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def _violations(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    own = rel.parts[0]
    bad = []
    for line, module, names in _imports(path):
        top = module.split(".")[0]
        if top not in RANK:
            continue
        if RANK[top] > RANK[own]:
            bad.append(f"{rel}:{line}: {own} imports {module}, a higher layer")
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private:
            bad.append(f"{rel}:{line}: imports private {', '.join(private)} from {module}")
        if any(part.startswith("_") and not part.startswith("__") for part in module.split(".")[1:]):
            bad.append(f"{rel}:{line}: imports private module {module}")
    return bad


def test_every_package_is_a_layer():
    found = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests", "bench"}
    assert found == set(LAYERS), f"packages without a layer (or layers without a package): {found ^ set(LAYERS)}"


def test_imports_point_down_and_skip_private_names():
    bad = [v for path in _modules() for v in _violations(path)]
    assert not bad, "\n".join(bad)


def test_base_layer_imports_nothing_of_ours():
    for path in (ROOT / "core").rglob("*.py"):
        ours = [m for _, m, _ in _imports(path) if m.split(".")[0] in RANK and m.split(".")[0] != "core"]
        assert not ours, f"{path.relative_to(ROOT)} imports {ours}"


@pytest.mark.parametrize("source, expected", [
    ("from inference.labeling import label\n", "features imports inference.labeling, a higher layer"),
    ("from features.store import _Latest\n", "imports private _Latest from features.store"),
    ("def f():\n    import affectflow.cli\n", "features imports affectflow.cli, a higher layer"),
])
def test_the_checker_catches_violations(tmp_path, monkeypatch, source, expected):
    pkg = tmp_path / "features"
    pkg.mkdir()
    (pkg / "bad.py").write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert any(expected in v for v in _violations(pkg / "bad.py"))
