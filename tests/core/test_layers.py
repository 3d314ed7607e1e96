"""The architecture, checked: every module imports only layers below it, and no other module's ``_private`` name.

Layers, bottom to top (a package may import its own modules and any lower package):

    core -> features -> scoring -> pipelines -> modeling -> training -> registry -> inference -> synth -> affectflow

Imports inside functions count too: a lazy import is still a dependency. No two modules may import
each other, directly or through others (an import circle). ``bench/`` scripts sit above everything:
they import the project as a user would (no ``sys.path`` edits, no ``_private`` names).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = (
    "core",
    "features",
    "scoring",
    "pipelines",
    "modeling",
    "training",
    "registry",
    "inference",
    "review",
    "synth",
    "affectflow",
)
RANK = {name: i for i, name in enumerate(LAYERS)}


def _modules() -> list[Path]:
    return sorted(p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py"))


def _bench() -> list[Path]:
    return sorted((ROOT / "bench").glob("*.py"))


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
    if own == "bench" and "sys.path" in path.read_text(encoding="utf-8"):
        bad.append(f"{rel}: edits sys.path (a bench imports the installed project)")
    for line, module, names in _imports(path):
        top = module.split(".")[0]
        if top not in RANK:
            continue
        if own in RANK and RANK[top] > RANK[own]:
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
    bad = [v for path in _modules() + _bench() for v in _violations(path)]
    assert not bad, "\n".join(bad)


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _circles(paths: list[Path], root: Path) -> list[list[str]]:
    """Import circles among ``paths``: each strongly connected group of two or more modules (Tarjan)."""
    names = {_module_name(p, root): p for p in paths}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        edges = set()
        for _, module, imported in _imports(path):
            for target in [module] + [f"{module}.{n}" for n in imported]:
                if target in names and target != name:
                    edges.add(target)
        graph[name] = edges
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    circles = _circles(_modules(), ROOT)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_check_catches_a_lazy_circle(tmp_path):
    pkg = tmp_path / "modeling"
    pkg.mkdir()
    (pkg / "a.py").write_text("from modeling.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from modeling.c import h\n")
    (pkg / "c.py").write_text("import modeling.a\n")
    (pkg / "d.py").write_text("from modeling import a\n")
    assert _circles(sorted(pkg.glob("*.py")), tmp_path) == [["modeling.a", "modeling.b", "modeling.c"]]


def test_the_checker_catches_a_bench_path_edit(tmp_path, monkeypatch):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "b.py").write_text("import sys\nsys.path.insert(0, '..')\nfrom modeling.model import _x\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    found = _violations(bench / "b.py")
    assert any("edits sys.path" in v for v in found) and any("imports private _x" in v for v in found)


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
