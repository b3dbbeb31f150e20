"""What produced a record: a fingerprint of the library source, the lesson's notebook, its parameters and the
shipped weights, so that a committed record that the current code would not reproduce is caught
(:func:`check_records`, run by ``fmcls check`` / ``make check`` and by the test suite).

A committed record (``figures/<lesson>.json``) must come from the unchanged ``full`` parameter set on the full
evaluation splits with :data:`RECORD_THREADS` intra-op threads (``make course`` pins them), its ``params`` must
name every parameter of the notebook's parameters cell except :data:`NOT_RECORDED`, and every claim must carry a
verdict.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
NOTEBOOKS = ROOT / "notebooks"
WEIGHTS = PACKAGE / "pretrain" / "weights"
RECORD_THREADS = 2  # torch intra-op threads of committed records (they change fine-tuned weights)
NOT_RECORDED = ("interactive", "executor")  # parameters that do not change what a lesson measures
REGENERATE = "regenerate with `make course`"
VERDICTS = ("shown", "refuted", "undecided")  # a claim's verdict at 95 % (fm.results decides it)
FIGURES = ROOT / "figures"  # the committed records; a run elsewhere writes to $FMCLS_FIGURES


@functools.lru_cache(maxsize=None)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _digest(p: Path) -> str:
    st = p.stat()
    return _file_digest(str(p), st.st_mtime_ns, st.st_size)


def notebook_source(lesson: str) -> str:
    """The lesson's cells (type and source only: outputs, execution counts and metadata do not count)."""
    nb = json.loads((NOTEBOOKS / f"{lesson}.ipynb").read_text())
    return json.dumps([[c["cell_type"], "".join(c["source"])] for c in nb["cells"]])


def notebook_params(lesson: str) -> dict:
    """The lesson notebook's ``parameters`` cell: name -> default value."""
    import ast

    import papermill

    info = papermill.inspect_notebook(str(NOTEBOOKS / f"{lesson}.ipynb"))
    return {k: ast.literal_eval(v["default"]) for k, v in info.items()}


def record_params(lesson: str) -> dict:
    """What a committed record's ``params`` must be: every notebook default except :data:`NOT_RECORDED`."""
    return {k: v for k, v in notebook_params(lesson).items() if k not in NOT_RECORDED}


def library_files() -> list[Path]:
    """The library's source and data files, without the shipped weights (those count by their hashes)."""
    return sorted(p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix in (".py", ".json")
                  and WEIGHTS not in p.parents and "__pycache__" not in p.parts)


def record_value(x):
    """``x`` as a record stores it: dict keys as strings, tuples as lists, numpy scalars as Python numbers, floats
    rounded to 4 decimals (3 significant digits below 1e-3)."""
    if isinstance(x, dict):
        return {str(k): record_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [record_value(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 0) == 0:
        x = x.item()
    if isinstance(x, float):
        return round(x, 4) if abs(x) >= 1e-3 or x == 0 else float(f"{x:.3g}")
    return x


def canonical_params(params: dict) -> str:
    """``params`` as the record stores them (floats rounded like :func:`fmcls_lib.results.write` does, numpy
    scalars as Python numbers, keys sorted), so a record's fingerprint can be recomputed from its own ``params``."""
    return json.dumps(record_value(dict(params)), sort_keys=True, default=str)


def fingerprint(lesson: str, params: dict) -> str:
    """sha256 (16 hex digits) of the library source, the notebook's cells, ``params`` and the shipped weights."""
    h = hashlib.sha256()
    h.update(notebook_source(lesson).encode() if (NOTEBOOKS / f"{lesson}.ipynb").exists() else lesson.encode())
    h.update(canonical_params(params).encode())
    for p in library_files():
        h.update(p.relative_to(PACKAGE).as_posix().encode())
        h.update(_digest(p).encode())
    for p in sorted(WEIGHTS.glob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(_digest(p).encode())
    return h.hexdigest()[:16]


def _short(v) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


def check_record(path) -> list[str]:
    """Why the record at ``path`` is not what the current code makes with the ``full`` set: one line per
    difference (empty if it matches)."""
    path = Path(path)
    name = path.name

    def bad(what: str) -> str:
        return f"{name}: {what}; {REGENERATE}"

    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return [bad(f"not a readable JSON record ({e})")]
    lesson = rec.get("lesson", path.stem)
    if lesson != path.stem:
        return [bad(f"names lesson {lesson!r}, not {path.stem!r}")]
    if not (NOTEBOOKS / f"{lesson}.ipynb").exists():
        return [f"{name}: no notebook notebooks/{lesson}.ipynb made it; remove the record or {REGENERATE}"]
    out = []
    params = rec.get("params")
    if not isinstance(params, dict):
        out.append(bad("has no params"))
        params = {}
    else:
        want = record_value(record_params(lesson))
        got = record_value(params)
        missing = [k for k in want if k not in got]
        extra = [k for k in got if k not in want]
        changed = [k for k in want if k in got and got[k] != want[k]]
        if missing:
            out.append(bad(f"params lack {', '.join(missing)} (the notebook's parameters cell has them; "
                           f"a record names every parameter except {', '.join(NOT_RECORDED)})"))
        if extra:
            out.append(bad(f"params have {', '.join(extra)}, which the notebook's parameters cell does not"))
        for k in changed:
            out.append(bad(f"params[{k!r}] is {_short(got[k])}, the notebook default is {_short(want[k])} "
                           "(committed records come from the unchanged `full` set)"))
    fp = rec.get("fingerprint")
    if fp is None:
        out.append(bad("has no fingerprint"))
    elif isinstance(params, dict) and fp != (now := fingerprint(lesson, params)):
        out.append(bad(f"fingerprint {fp} is not {now}, what the current library, notebook, params and shipped "
                       "weights give (it was made by other code)"))
    if rec.get("splits") != "full":
        why = " (made with the smoke evaluation splits)" if rec.get("splits") == "smoke" else ""
        out.append(bad(f"splits is {_short(rec.get('splits'))}, not \"full\"{why}"))
    if rec.get("threads") != RECORD_THREADS:
        out.append(bad(f"threads is {_short(rec.get('threads'))}, not {RECORD_THREADS} "
                       f"(`make course` pins FMCLS_THREADS={RECORD_THREADS})"))
    claims = rec.get("claims")
    if not isinstance(claims, dict):
        out.append(bad("has no claims"))
    else:
        none = [k for k, c in claims.items() if not isinstance(c, dict) or not (
            c.get("verdict") in VERDICTS or (c.get("kind") == "identity" and c.get("verdict") == "checked"))]
        if none:
            out.append(bad(f"claims without a verdict ({', '.join(VERDICTS)}) or kind identity: "
                           f"{', '.join(none)}"))
    return out


def check_records(figures_dir=None, complete: bool = False) -> list[str]:
    """Every record ``figures_dir/[0-9][0-9]_*.json`` (default: the course's ``figures/``) against the current
    code: one line per problem, naming the record and what differs, ending in "regenerate with `make course`".
    Empty when every record is what ``make course`` would write now.  ``complete``: also report lessons that
    have no record."""
    figures_dir = Path(figures_dir or ROOT / "figures")
    paths = sorted(figures_dir.glob("[0-9][0-9]_*.json"))
    out = [line for p in paths for line in check_record(p)]
    if complete:
        have = {p.stem for p in paths}
        out += [f"{nb.stem}.json: missing (notebooks/{nb.name} has no record in {figures_dir}); {REGENERATE}"
                for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if nb.stem not in have]
    return out
