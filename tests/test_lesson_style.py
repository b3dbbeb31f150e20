"""The lessons stay readable (issue 15): short cells, short lines, no nested lambdas, one shared setup, a computed
runtime, libraries imported by name.  The parameters cell is exempt from the length rule (one line per parameter),
display math and table rows from the line rule."""
import ast
import json
import re

import pytest

from fmcls_lib import course


def _cells(lesson):
    nb = json.loads((course.NOTEBOOKS / f"{lesson}.ipynb").read_text())
    return [(c, "".join(c["source"]) if isinstance(c["source"], list) else c["source"]) for c in nb["cells"]]


def _code(lesson):
    return [(c, s) for c, s in _cells(lesson) if c["cell_type"] == "code"
            and "parameters" not in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("lesson", course.lessons())
def test_cells_and_lines_are_short(lesson):
    long_cells = [s.splitlines()[0] for _, s in _code(lesson) if len(s.splitlines()) > 15]
    assert not long_cells, f"{lesson}: code cells over 15 lines start with {long_cells}"
    long_lines = [line for c, s in _cells(lesson) for line in s.splitlines() if len(line) > 110
                  and not (c["cell_type"] == "markdown" and (line.lstrip().startswith(("$$", "|"))
                                                                 or line.rstrip().endswith("$$")))]
    assert not long_lines, f"{lesson}: lines over 110 characters: {long_lines[:3]}"


@pytest.mark.parametrize("lesson", course.lessons())
def test_no_nested_lambdas(lesson):
    for _, s in _code(lesson):
        tree = ast.parse("\n".join(line for line in s.splitlines() if not line.lstrip().startswith(("%", "!"))))
        for node in ast.walk(tree):
            if isinstance(node, ast.Lambda):
                inner = [n for n in ast.walk(node.body) if isinstance(n, ast.Lambda)]
                assert not inner, f"{lesson}: a lambda inside a lambda: {ast.unparse(node)[:80]}"


@pytest.mark.parametrize("lesson", course.lessons())
def test_shared_setup_computed_runtime_and_imports_by_name(lesson):
    code = "\n".join(s for _, s in _code(lesson))
    assert f'fm.course.setup("{lesson}", globals())' in code
    assert f'fm.course.runtime("{lesson}")' in code
    assert "fm.plots.sns" not in code and "fm.plots.plt" not in code and "fm.plots.pd" not in code
    header = _cells(lesson)[0][1]
    assert not re.search(r"\d+(\.\d+)?\s*(s|min|minutes|seconds)\b", header), f"{lesson}: a typed runtime in the header"
