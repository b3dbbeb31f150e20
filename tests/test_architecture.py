"""ARCHITECTURE.md stays true: read from the source, fmcls_lib's import graph (imports inside functions included)
has no cycle, and every import goes to a module in the same layer of the document's table or below it."""
import ast
import graphlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fmcls_lib"
DOC = PACKAGE.parent / "ARCHITECTURE.md"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph(root: Path = PACKAGE) -> dict:
    """Module -> the package's modules it imports anywhere in its source (module level or inside functions)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}
    top = root.name
    out = {}
    for me, path in files.items():
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == top}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                elif (node.module or "").split(".")[0] == top:
                    base = node.module
                else:
                    continue
                # `from . import x` names a submodule when there is one, else an attribute of the package
                deps |= ({f"{base}.{a.name}" for a in node.names} & set(files)) or {base}
        out[me] = {d if d in files else d.rpartition(".")[0] for d in deps} - {me}
    return out


def cycle(g: dict):
    try:
        list(graphlib.TopologicalSorter(g).static_order())
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def layers() -> dict:
    """Module -> its layer number, from the table in ARCHITECTURE.md (`__init__` is the package itself)."""
    out = {}
    for row in re.findall(r"^\| (\d) \|[^|]*\|(.*)\|$", DOC.read_text(), flags=re.M):
        for name in re.findall(r"`([\w.]+)`", row[1]):
            out["fmcls_lib" if name == "__init__" else f"fmcls_lib.{name}"] = int(row[0])
    return out


def test_the_import_graph_has_no_cycle():
    found = cycle(graph())
    assert found is None, f"import cycle (imports inside functions count): {' -> '.join(found)}"


def test_every_module_is_in_one_layer_and_imports_only_downwards():
    g, layer = graph(), layers()
    assert set(layer) == set(g), (f"modules missing from ARCHITECTURE.md's table: {sorted(set(g) - set(layer))}; "
                                  f"listed there but gone: {sorted(set(layer) - set(g))}")
    upward = [f"{a} (layer {layer[a]}) -> {b} (layer {layer[b]})" for a, ds in g.items() for b in ds
              if layer[b] > layer[a]]
    assert not upward, f"imports against ARCHITECTURE.md's direction: {upward}"


def test_the_checks_can_fail(tmp_path):
    """A made-up package: two modules importing each other inside functions form a cycle the graph finds, and a
    relative import of a submodule resolves to that submodule."""
    pkg = tmp_path / "fmcls_lib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("def g():\n    from ..a import x\n    import numpy\n")
    g = graph(pkg)
    assert g["fmcls_lib.a"] == {"fmcls_lib.b"} and g["fmcls_lib.b"] == {"fmcls_lib.sub.c"}
    assert g["fmcls_lib.sub.c"] == {"fmcls_lib.a"}
    assert set(cycle(g)) == {"fmcls_lib.a", "fmcls_lib.b", "fmcls_lib.sub.c"}
    (pkg / "sub" / "c.py").write_text("import numpy\n")
    assert cycle(graph(pkg)) is None
