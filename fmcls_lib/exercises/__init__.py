"""Exercises with feedback: the student writes a few lines in the notebook, :func:`check` tests them.

Each exercise is registered here with the library function its answer must agree with (``reference``), a
reference solution written in the slide's notation (``solution``, whose body is what an instructor version of
the notebook holds between nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers), random and
edge-case inputs (``cases``) and known wrong answers with a hint each (``mistakes``).  :func:`check` never
shows the solution: it says which input failed, which shape or which term is off.

Notebooks ship as the *student* version: an exercise cell is an nbgrader solution cell (cell metadata
``nbgrader.solution``) whose body is nbgrader's stub ``raise NotImplementedError()``; ``check`` then answers
"not attempted" and the lesson goes on with the library's function.  :func:`instructor_notebook` fills the
library's solutions in (with the markers), and nbgrader's own ``ClearSolutions`` turns that back into exactly
the shipped notebook (tested), so an instructor can run ``nbgrader generate_assignment`` on it.

Exercises live in one module per lesson (``l01`` ... ``l06``), imported on first use.
"""
from __future__ import annotations

import importlib
import inspect
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import UnknownNameError

LESSON_MODULES = ("l01", "l02", "l03", "l04", "l05", "l06")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # nbgrader's default python code stub, verbatim


@dataclass(frozen=True)
class Case:
    """One input to try: positional arguments and a short description the feedback can name."""
    args: tuple
    what: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Exercise:
    name: str
    lesson: str
    reference: Callable          # the library's computation the answer must match
    solution: Callable           # the reference solution, in the slide's notation (its body fills the stub)
    cases: Callable[[], list]    # () -> [Case]: random inputs and edge cases, generated from a fixed seed
    mistakes: tuple = ()         # ((wrong_fn, hint), ...): an answer that agrees with wrong_fn gets the hint
    atol: float = 1e-4
    rtol: float = 1e-4


@dataclass(frozen=True)
class Result:
    name: str
    status: str                  # "correct", "wrong" or "not attempted"
    message: str

    def __bool__(self):
        return self.status == "correct"

    def __repr__(self):
        return f"{self.name}: {self.status} - {self.message}"

    def _repr_markdown_(self):
        mark = {"correct": "✅", "wrong": "❌", "not attempted": "✏️"}[self.status]
        return f"{mark} **{self.name}** — {self.status}: {self.message}"


REGISTRY: dict[str, Exercise] = {}


# ----------------------------------------------------------------------------- fixed-seed inputs for the cases

def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen(seed))


def unit(*shape, seed: int) -> torch.Tensor:
    """Random rows of unit length (like CLIP's normalised features)."""
    return torch.nn.functional.normalize(randn(*shape, seed=seed), dim=-1)


def labels(n: int, classes: int, seed: int) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=gen(seed))


def register(ex: Exercise) -> Exercise:
    if ex.name in REGISTRY:
        raise ValueError(f"exercise {ex.name!r} is registered twice")
    REGISTRY[ex.name] = ex
    return ex


def _load_all() -> dict[str, Exercise]:
    for m in LESSON_MODULES:
        importlib.import_module(f".{m}", __name__)
    return REGISTRY


def get(name: str) -> Exercise:
    reg = _load_all()
    if name not in reg:
        raise UnknownNameError("exercise", name, sorted(reg))
    return reg[name]


def names(lesson: str | None = None) -> list[str]:
    return [n for n, e in _load_all().items() if lesson is None or e.lesson == lesson]


# ----------------------------------------------------------------------------- comparing answers

def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}"
    if isinstance(x, dict):
        return f"dict with keys {sorted(map(str, x))[:6]}"
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__} of length {len(x)}"
    return type(x).__name__


def _mismatch(got, want, atol, rtol) -> str | None:
    """``None`` when ``got`` matches ``want``; else what differs (structure first, then values)."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"expected a dict (parameter name -> tensor), got a {_describe(got)}"
        if set(got) != set(want):
            missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            return f"the keys differ (missing {missing[:3]}, unexpected {extra[:3]})"
        for k in want:
            m = _mismatch(got[k], want[k], atol, rtol)
            if m:
                return f"entry {k!r}: {m}"
        return None
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return f"expected a {_describe(want)}, got a {_describe(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            m = _mismatch(g, w, atol, rtol)
            if m:
                return f"item {i}: {m}"
        return None
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a {_describe(want)}, got a {_describe(got)}"
        if got.shape != want.shape:
            return f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
        if want.dtype == torch.bool or not want.is_floating_point():
            bad = int((got.to(want.dtype) != want).sum())
            return f"{bad} of {want.numel()} entries differ" if bad else None
        g = got.detach().to(torch.float64)
        w = want.to(torch.float64)
        if not torch.isfinite(g).all():
            return "the answer contains NaN or inf"
        err = (g - w).abs()
        if bool((err <= atol + rtol * w.abs()).all()):
            return None
        return f"values differ (largest difference {float(err.max()):.3g}, on entries of size ~{float(w.abs().mean()):.3g})"
    try:
        ok = abs(float(got) - float(want)) <= atol + rtol * abs(float(want))
    except (TypeError, ValueError):
        return f"expected a number, got a {_describe(got)}"
    return None if ok else f"expected {float(want):.4g}, got {float(got):.4g}"


def _clone(args):
    """Fresh copies, so an answer that modifies its inputs in place cannot change the reference's."""
    def c(x):
        if isinstance(x, torch.Tensor):
            return x.clone()
        if isinstance(x, dict):
            return {k: c(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(c(v) for v in x)
        return x
    return c(args)


def check(name: str, fn: Callable) -> Result:
    """Test the student's ``fn`` against the library on the exercise's random and edge-case inputs.

    Returns (and, in a notebook, displays) a :class:`Result`.  A stub that still raises
    ``NotImplementedError`` is "not attempted" — never an error, so a lesson runs on with the library's
    function.  Feedback names the input and what is off (shape, a known mistake's hint), never the solution.
    """
    ex = get(name)
    if not callable(fn):
        raise TypeError(f"fm.exercises.check({name!r}, fn): fn must be the function you wrote, got {_describe(fn)}")
    cases = ex.cases()
    for case in cases:
        try:
            got = fn(*_clone(case.args), **case.kwargs)
        except NotImplementedError:
            return Result(name, "not attempted", "replace `raise NotImplementedError()` by your code, then run "
                                                 "this cell again (the lesson uses the library's version meanwhile)")
        except Exception as e:  # the student's code failed: say where, not how to fix it
            return Result(name, "wrong", f"on {case.what} your function raised {type(e).__name__}: {e}")
        want = ex.reference(*_clone(case.args), **case.kwargs)
        problem = _mismatch(got, want, ex.atol, ex.rtol)
        if problem is None:
            continue
        for wrong, hint in ex.mistakes:
            if _mismatch(got, wrong(*_clone(case.args), **case.kwargs), ex.atol, ex.rtol) is None:
                return Result(name, "wrong", f"on {case.what}: {problem}. Hint: {hint}")
        return Result(name, "wrong", f"on {case.what}: {problem}")
    return Result(name, "correct", f"agrees with the library on all {len(cases)} inputs "
                                   f"({', '.join(c.what for c in cases)})")


# ----------------------------------------------------------------------------- instructor / student versions

def solution_body(name: str) -> str:
    """The reference solution's body (no signature, no docstring), dedented: what the instructor version of
    the exercise cell holds between the solution markers."""
    fn = get(name).solution
    src = textwrap.dedent(inspect.getsource(fn))
    lines = src.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith(":") and line.lstrip().startswith("def "))
    body = textwrap.dedent("\n".join(lines[start + 1:]))
    doc = inspect.getdoc(fn)
    if doc:  # drop the docstring: the notebook's stub keeps its own
        import ast
        tree = ast.parse(body)
        first = tree.body[0]
        if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
            body = "\n".join(body.splitlines()[first.end_lineno:])
    return textwrap.dedent(body).strip("\n")


def exercise_cells(nb: dict) -> list[tuple[int, str]]:
    """``(cell index, exercise name)`` of every nbgrader solution cell in a notebook (its ``grade_id``)."""
    out = []
    for i, c in enumerate(nb["cells"]):
        meta = c.get("metadata", {}).get("nbgrader", {})
        if c["cell_type"] == "code" and meta.get("solution"):
            out.append((i, meta["grade_id"]))
    return out


def _source(cell) -> str:
    s = cell["source"]
    return s if isinstance(s, str) else "".join(s)


def fill_solutions(nb: dict) -> dict:
    """The instructor version of a shipped (student) notebook: every stub replaced by the library's solution
    between nbgrader's markers, indented like the stub."""
    nb = json.loads(json.dumps(nb))
    stub_lines = STUB.splitlines()
    for i, name in exercise_cells(nb):
        lines = _source(nb["cells"][i]).splitlines()
        at = next((k for k in range(len(lines) - 1) if lines[k].strip() == stub_lines[0]
                   and lines[k + 1].strip() == stub_lines[1]), None)
        if at is None:
            raise ValueError(f"exercise cell {i} ({name}) has no nbgrader stub ({STUB!r}) to fill")
        indent = lines[at][:len(lines[at]) - len(lines[at].lstrip())]
        body = [indent + BEGIN, *textwrap.indent(solution_body(name), indent).splitlines(), indent + END]
        nb["cells"][i]["source"] = "\n".join(lines[:at] + body + lines[at + 2:])
    return nb


def instructor_notebook(path, out) -> Path:
    """Write the instructor version of notebook ``path`` to ``out`` (atomically)."""
    from ..cache import atomic_write_bytes
    nb = fill_solutions(json.loads(Path(path).read_text()))
    atomic_write_bytes(Path(out), (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode())
    return Path(out)


def student_notebook(nb: dict) -> dict:
    """What nbgrader's ``ClearSolutions`` preprocessor makes of an instructor notebook (the student version)."""
    import nbformat
    from nbgrader.preprocessors import ClearSolutions

    node = nbformat.reads(json.dumps(nb), as_version=4)
    node, _ = ClearSolutions().preprocess(node, {})
    return json.loads(nbformat.writes(node))
