"""No function takes more than eight parameters: past that, a job wants a request (a frozen dataclass).

Every module of every layer and every bench script is parsed; ``self``/``cls`` do not count,
``*args``/``**kwargs`` count one each. Dataclass constructors are generated, not written, so a
request with many fields passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.core.test_layers import LAYERS, ROOT

MAX_PARAMS = 8


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    names += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def _long_signatures(path: Path, root: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    functions = sorted((node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))),
                       key=lambda node: node.lineno)
    return [f"{path.relative_to(root)}:{fn.lineno} {fn.name} takes {len(_params(fn))} parameters"
            for fn in functions if len(_params(fn)) > MAX_PARAMS]


def test_no_function_takes_more_than_eight_parameters():
    paths = sorted(p for pkg in (*LAYERS, "bench") for p in (ROOT / pkg).rglob("*.py"))
    assert paths, "no modules found"
    long = [line for path in paths for line in _long_signatures(path, ROOT)]
    assert not long, "past eight parameters a function wants a request dataclass:\n" + "\n".join(long)


def test_the_check_counts_as_described(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "class C:\n"
        "    def ok(self, a, b, c, d, e, f, g, h): ...\n"  # self excluded: 8
        "    def wide(self, a, b, c, d, e, f, g, *, h, i): ...\n"  # 9
        "async def star(a, b, c, d, e, f, g, *args, **kwargs): ...\n"  # 9
        "def nested():\n"
        "    def inner(a, b, c, d, e, f, g, h, i=1): ...\n"  # 9, found inside another function
    )
    found = _long_signatures(src, tmp_path)
    assert found == ["m.py:3 wide takes 9 parameters", "m.py:4 star takes 9 parameters",
                     "m.py:6 inner takes 9 parameters"]
