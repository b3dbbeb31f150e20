"""Running lessons: parameter sets, validated papermill runs, and the resumable whole-course run."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from .cache import atomic_write_bytes
from .errors import FmclsError, UnknownNameError
from .results import FIGURES

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PARAM_SETS = json.loads((Path(__file__).parent / "param_sets.json").read_text())


def lessons() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def notebook_params(lesson: str) -> dict:
    """The lesson's ``parameters`` cell: name -> default value."""
    import papermill

    if lesson not in lessons():
        raise UnknownNameError("lesson", lesson, lessons())
    info = papermill.inspect_notebook(str(NOTEBOOKS / f"{lesson}.ipynb"))
    return {k: ast.literal_eval(v["default"]) for k, v in info.items()}


def _parse(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


def resolve_params(lesson: str, param_set: str | None = None, overrides: dict | None = None) -> dict:
    """Parameters for one run: a named set (only the names this lesson has), then ``overrides``.

    Unknown names and values of the wrong type are rejected up front, listing what is accepted
    (papermill alone would silently inject anything).
    """
    defaults = notebook_params(lesson)
    out = {}
    if param_set is not None:
        if param_set not in PARAM_SETS:
            raise UnknownNameError("parameter set", param_set, PARAM_SETS)
        out.update({k: v for k, v in PARAM_SETS[param_set].items() if k in defaults})
    for k, v in (overrides or {}).items():
        if k not in defaults:
            raise UnknownNameError(f"parameter of {lesson}", k,
                                   [f"{n}={d!r}" for n, d in defaults.items()])
        v = _parse(v) if isinstance(v, str) and not isinstance(defaults[k], str) else v
        d = defaults[k]
        ok = (isinstance(v, bool) == isinstance(d, bool)) and (
            isinstance(v, type(d)) or (isinstance(d, float) and isinstance(v, int)) or d is None)
        if not ok:
            raise FmclsError(f"parameter {k!r} of {lesson} must be {type(d).__name__} like its "
                             f"default {d!r}; got {v!r}")
        out[k] = v
    return out


def run_lesson(lesson: str, params: dict, out_dir, progress: bool = True) -> Path:
    """Execute ``lesson`` with papermill into ``out_dir``; returns the executed notebook's path."""
    import papermill

    out = Path(out_dir) / f"{lesson}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOKS / f"{lesson}.ipynb"), str(out), parameters=params,
                               cwd=str(NOTEBOOKS), progress_bar=progress, kernel_name="python3")
    return out


def _fingerprint(lesson: str, params: dict) -> str:
    h = hashlib.sha256((NOTEBOOKS / f"{lesson}.ipynb").read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    for p in sorted((ROOT / "fmcls_lib").rglob("*")):
        if p.suffix in (".py", ".json", ".safetensors"):
            h.update(p.read_bytes())
    return h.hexdigest()


def _route_figures(param_set, out_dir: Path, overridden: bool = False) -> Path:
    """Where a run's records and figures go: only the unchanged ``full`` set refreshes the course's ``figures/``;
    anything else writes to ``<out_dir>/figures``.  Set in the environment, which the lessons' kernels inherit."""
    figures = FIGURES if param_set == "full" and not overridden else Path(out_dir) / "figures"
    os.environ["FMCLS_FIGURES"] = str(figures)
    return figures


def run_course(param_set: str = "full", out_dir=None, force: bool = False, only=None) -> dict:
    """Build (or load) the embedded models, run every lesson, refresh ``figures/`` and its summary
    (other parameter sets write their figures and summary to ``<out_dir>/figures`` instead).

    A lesson whose notebook, parameters and library are unchanged since its last successful run
    into ``out_dir`` is skipped, so an interrupted course run resumes where it stopped.
    """
    from tqdm.auto import tqdm

    from . import backbones

    out_dir = Path(out_dir or ROOT / "executed" / param_set)
    figures = _route_figures(param_set, out_dir)
    t0 = time.time()
    # each builds into the cache only if the shipped copy is missing or corrupt
    backbones.load_clip("tiny")
    backbones.load_generator("tiny")
    backbones.load_ssl("tiny-dino")
    timings = {}
    todo = [les for les in lessons() if only is None or les in only]
    for lesson in tqdm(todo, desc=f"course ({param_set})", unit="lesson"):
        params = resolve_params(lesson, param_set)
        stamp = out_dir / ".stamps" / f"{lesson}.json"
        fp = _fingerprint(lesson, params)
        if not force and stamp.exists() and json.loads(stamp.read_text())["fingerprint"] == fp \
                and (out_dir / f"{lesson}.ipynb").exists():
            timings[lesson] = "skipped (unchanged)"
            continue
        t = time.time()
        run_lesson(lesson, params, out_dir, progress=False)
        timings[lesson] = round(time.time() - t, 1)
        atomic_write_bytes(stamp, json.dumps({"fingerprint": fp, "seconds": timings[lesson]}).encode())
    summary = write_summary(figures)
    print(f"course ({param_set}) done in {time.time() - t0:.0f} s: {timings}")
    print(f"executed notebooks: {out_dir}\nsummary: {summary}\n"
          f"open the course:  jupyter lab {NOTEBOOKS}")
    return timings


def write_summary(figures=None) -> Path:
    """``figures/README.md``: every lesson's headline metrics and claims, read from its record."""
    figures = Path(figures or FIGURES)
    lines = ["# Course results", "", "Written by `fmcls course` from each lesson's "
             "`figures/<lesson>.json`; every number below was measured by the lesson.", ""]
    for rec_path in sorted(figures.glob("[0-9][0-9]_*.json")):
        rec = json.loads(rec_path.read_text())
        lines += [f"## {rec['lesson']}", "", f"params: `{json.dumps(rec['params'])}`", ""]
        rows = {m: r for m, r in rec["metrics"].items() if isinstance(r, dict)}
        for kind in (False, True):  # a table by domain, then one by shots
            part = {m: r for m, r in rows.items() if all(str(k).isdigit() for k in r) == kind}
            cols = sorted({str(c) for r in part.values() for c in r}, key=lambda c: (len(c), c) if kind else c)
            if not part:
                continue
            lines += ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            lines += [f"| {m} | " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), (int, float)) else ""
                                              for c in cols) + " |" for m, r in part.items()]
            lines.append("")
        lines += [""] + [f"- **{k}**: {'holds' if c['holds'] else 'does NOT hold'}"
                         f"{' (within noise)' if c.get('clear') is False else ''} — {c['evidence']}"
                         for k, c in rec["claims"].items()]
        lines += [""] + [f"![{p.stem}]({p.name})" for p in sorted(figures.glob(f"{rec['lesson']}*.png"))]
        lines.append("")
    path = figures / "README.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path


def prepare(param_set: str, out_dir, overrides: dict | None = None) -> list[Path]:
    """Parameterised, unexecuted copies of every lesson (what nbval runs under ``make test``)."""
    import papermill

    out = []
    for lesson in lessons():
        path = Path(out_dir) / f"{lesson}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(str(NOTEBOOKS / f"{lesson}.ipynb"), str(path),
                                   parameters=resolve_params(lesson, param_set, overrides), prepare_only=True)
        out.append(path)
    return out


def add_parsers(sub):
    pp = sub.add_parser("prepare", help="write parameterised copies of the lessons (for nbval)")
    pp.add_argument("out")
    pp.add_argument("--set", dest="param_set", default="smoke", choices=sorted(PARAM_SETS))
    pp.set_defaults(func=lambda a: print(*prepare(a.param_set, a.out), sep="\n") or 0)
    r = sub.add_parser("run", help="run one lesson with papermill, parameters validated")
    r.add_argument("lesson")
    r.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    r.add_argument("--set", dest="param_set", default=None, choices=sorted(PARAM_SETS))
    r.add_argument("--out", default=None, help="output folder (default executed/<set or custom>)")
    r.set_defaults(func=_cmd_run)
    c = sub.add_parser("course", help="build models if needed, run all lessons, refresh figures/")
    c.add_argument("--set", dest="param_set", default="full", choices=sorted(PARAM_SETS))
    c.add_argument("--out", default=None)
    c.add_argument("--force", action="store_true", help="re-run lessons even if unchanged")
    c.set_defaults(func=lambda a: (run_course(a.param_set, a.out, a.force), 0)[1])


def _cmd_run(args) -> int:
    try:
        params = resolve_params(args.lesson, args.param_set, dict(args.param))
    except FmclsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = Path(args.out or ROOT / "executed" / (args.param_set or "custom"))
    figures = _route_figures(args.param_set, out_dir, bool(args.param))
    out = run_lesson(args.lesson, params, out_dir)
    print(f"executed notebook: {out}\nfigures and metrics: {figures}/{args.lesson}*.png / .json")
    return 0
