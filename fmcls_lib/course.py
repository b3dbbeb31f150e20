"""Running lessons: parameter sets, validated papermill runs, and the resumable whole-course run."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from . import provenance
from .cache import atomic_write_bytes
from .errors import FmclsError, UnknownNameError

ROOT = provenance.ROOT
NOTEBOOKS = provenance.NOTEBOOKS
PARAM_SETS = json.loads((Path(__file__).parent / "param_sets.json").read_text())


class ParameterError(FmclsError, ValueError):
    """A parameter value a lesson cannot run with; the message names the parameter and what is accepted."""


def lessons() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def notebook_params(lesson: str) -> dict:
    """The lesson's ``parameters`` cell: name -> default value."""
    if lesson not in lessons():
        raise UnknownNameError("lesson", lesson, lessons())
    return provenance.notebook_params(lesson)


def _parse(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


# ------------------------------------------------------------------------------ parameter values
# A validator gets (value, all resolved parameters) and returns None if the value is fine, else what is accepted
# (a phrase that completes "must be ...").  Checked in resolve_params, before any kernel starts.

def _each(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _is_whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _whole(lo: int, what: str = "", min_len: int = 1):
    def check(v, p):
        xs = _each(v)
        if len(xs) < min_len or not all(_is_whole(x) and x >= lo for x in xs):
            if isinstance(v, (list, tuple)):
                return f"a list of {'at least ' + str(min_len) if min_len > 1 else 'one or more'} whole numbers " \
                       f"≥ {lo}{what}"
            return f"a whole number ≥ {lo}{what}"
    return check


def _real(lo: float | None = None, hi: float | None = None, lo_open: bool = False, what: str = ""):
    def check(v, p):
        xs = _each(v)
        ok = bool(xs) and all(_is_number(x) and (lo is None or (x > lo if lo_open else x >= lo))
                              and (hi is None or x <= hi) for x in xs)
        if not ok:
            rng = f"in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else \
                f"{'>' if lo_open else '≥'} {lo:g}" if lo is not None else f"≤ {hi:g}"
            return (f"a list of one or more numbers {rng}" if isinstance(v, (list, tuple)) else f"a number {rng}") \
                + what
    return check


def _list_of(inner, what: str):
    def check(v, p):
        if not isinstance(v, (list, tuple)) or not v or inner(list(v), p):
            return what
    return check


def _pair(inner, what: str):
    def check(v, p):
        if not isinstance(v, (list, tuple)) or len(v) != 2 or inner(list(v), p):
            return what
    return check


def _task(kind: str = "dataset"):
    def check(v, p):
        from . import data
        if isinstance(v, str) and v.startswith(data.IMAGEFOLDER):
            if not os.path.isdir(os.path.join(v[len(data.IMAGEFOLDER):], "train")):
                return f"'{data.IMAGEFOLDER}<root>' with an existing folder <root>/train/<class>/ ({v!r} has none)"
            return None
        if v not in data.names():
            raise UnknownNameError(kind, v, data.names())
    return check


def _train_per_class(task) -> int | None:
    from . import world
    t = world.TASKS.get(task)
    return t.per_class["train"] if t is not None else None


def _shots(v, p):
    n = _train_per_class(p.get("task"))
    bound = f" and ≤ {n} (the images per class in the train split of {p.get('task')}, where few-shot examples " \
            f"are drawn from)" if n else ""
    if not isinstance(v, (list, tuple)) or not v or not all(_is_whole(x) and x >= 1 and (n is None or x <= n)
                                                            for x in v):
        return f"a non-empty list of whole numbers of examples per class, each ≥ 1{bound}, e.g. [1, 2, 4, 8, 16]"


def _alpha_step(v, p):
    import numpy as np
    accepted = ("a step that divides 1 (1/k for a whole k), so that the α grid "
                "np.arange(0, 1 + 1e-9, alpha_step) contains both 0 (zero-shot) and 1 (the fine-tune): "
                "accepted e.g. 0.5, 0.25, 0.2, 0.125, 0.1, 0.05, 0.025")
    if not _is_number(v) or not 0 < v <= 1:
        return accepted
    grid = np.round(np.arange(0, 1 + 1e-9, v), 4)
    if grid[-1] != 1.0:
        shown = ", ".join(f"{a:g}" for a in grid[:6]) + (", ..." if len(grid) > 6 else "")
        return f"{accepted} (with {v!r} the grid is {shown}: no α = 1)"


def _model(kind: str, family: str, real: str, is_real):
    """A model name: an embedded model of ``family`` in the registry (:mod:`fmcls_lib.models`), or a real-path name
    that ``is_real(name)`` accepts (lenient about tags and folders: the loader says precisely what is missing)."""
    def check(v, p):
        from . import models
        if not isinstance(v, str) or not v:
            return f"the name of a {kind}"
        if is_real(v):
            return None
        names = list(models.recipes(family))
        if v not in names:
            raise UnknownNameError(kind, v, names + [real])
    return check


def _backbone(v, p):
    """An embedded CLIP, ``<arch>/<tag>``, ``hf-hub:<org>/<repo>`` or ``<arch>@<local checkpoint file>``."""
    from . import backbones
    if not isinstance(v, str) or not v:
        return "the name of a backbone"
    kind, _, path = backbones.parse_clip_name(v)  # unknown names: UnknownNameError listing the accepted ones
    if kind == "file" and not os.path.isfile(path):
        return f"'<arch>@<file>' with an existing checkpoint file ({path!r} does not exist)"


def _real_generator(v: str) -> bool:
    return "/" in v.strip("/") or os.path.isdir(v)


def _real_ssl(v: str) -> bool:
    if "." in v:  # a timm model with its pretrained tag (vit_small_patch16_224.dino); timm checks the tag
        return True
    if "-" in v:  # embedded names (tiny-dino); timm architectures use underscores
        return False
    import timm
    return v in timm.list_models()


def _descriptions(v, p):
    if v is None or (isinstance(v, str) and os.path.isfile(v)):
        return None
    return ("None (the hand-written descriptions of a world task) or the path of an existing CuPL-format JSON file "
            "{classname: [sentences]}")


def _executor(v, p):
    if v is None or v in ("local", "ray", "auto") or (isinstance(v, str) and v.startswith("ray://")):
        return None
    return "None or 'local' (in-process), 'ray' (a local Ray), 'auto' or 'ray://host:port' (join a cluster)"


def _n_large(v, p):
    n = p.get("n_ingredients")
    if not _is_whole(v) or v < 2 or (_is_whole(n) and v > n):
        bound = f" and ≤ n_ingredients = {n} (they are the first n_large ingredients, re-trained)" \
            if _is_whole(n) else ""
        return f"a whole number ≥ 2 (a plane and a soup need two models){bound}"


VALIDATORS = {
    "task": _task(),
    "second_task": _task(),
    "prefix_task": _task(),
    "backbone": _backbone,
    "generator": _model("generator", "generator", "<diffusers model id>, e.g. stabilityai/sd-turbo, or a local "
                           "folder", _real_generator),
    "ssl": _model("ssl encoder", "ssl", "<timm model>, e.g. vit_small_patch16_224.dino", _real_ssl),
    "shots": _shots,
    "seeds": _whole(1, " (how many training seeds each claim is measured over)"),
    "alpha_step": _alpha_step,
    "search_scale": _pair(_real(0.1, lo_open=True), "two numbers > 0.1 (the largest β and α searched), "
                          "e.g. [7.0, 20.0]"),
    "search_step": _pair(_whole(1), "two whole numbers ≥ 1 (grid points along β and α), e.g. [200, 20]"),
    "per_class": _whole(1, " (generated images per class)"),
    "guidance_scale": _real(0.0),
    "inference_steps": _whole(1),
    "k_prime": _whole(0, " (generated images per class; 0: none)"),
    "k_primes": _whole(1, " (0 is always included), e.g. [1, 2, 4, 8, 16]", min_len=2),
    "large_lr_factor": _real(0.0, lo_open=True),
    "l2_lambda": _real(0.0),
    "n_ingredients": _whole(2, " (a soup needs two models)"),
    "n_large": _n_large,
    "grid_size": _whole(2, " (points per side of the plane grid)"),
    "sweep_seed": _whole(0),
    "executor": _executor,
    "descriptions": _descriptions,
}


def validator(name: str):
    """The check of parameter ``name``: :data:`VALIDATORS`, else by its name's ending (``*epochs``, ``*_steps``,
    ``*per_class``: whole ≥ 1; ``*_lr`` > 0; ``*_lrs``: a list of them; ``*fraction*`` in [0, 1]); None if nothing
    is known."""
    if name in VALIDATORS:
        return VALIDATORS[name]
    if name.endswith("epochs"):
        return _whole(1)
    if name.endswith("_lrs"):
        return _list_of(_real(0.0, lo_open=True), "a list of one or more learning rates > 0, e.g. [3e-4, 1e-3]")
    if name.endswith("_lr") or name == "lr":
        return _real(0.0, lo_open=True, what=" (a learning rate)")
    if "fraction" in name:
        return _real(0.0, 1.0)
    if name.endswith("_steps"):
        return _whole(1)
    if name.endswith("per_class"):
        return _whole(1, " (images per class)")
    return None


def check_values(lesson: str, params: dict, only=None) -> None:
    """Raise :class:`ParameterError` (or :class:`UnknownNameError` for names) for the first value in ``params``
    (all of the lesson's parameters, resolved) that the lesson cannot run with; ``only``: check just these names."""
    for k in (only if only is not None else params):
        check = validator(k)
        if check is None:
            continue
        v = params[k]
        try:
            accepted = check(v, params)
        except UnknownNameError as e:
            e.args = (f"parameter {k!r} of {lesson}: {e.args[0]}",)
            raise
        if accepted:
            raise ParameterError(f"parameter {k!r} of {lesson} must be {accepted}; got {v!r}")


def resolve_params(lesson: str, param_set: str | None = None, overrides: dict | None = None) -> dict:
    """Parameters for one run: a named set (only the names this lesson has), then ``overrides``.

    Unknown names, values of the wrong type and values the lesson cannot run with (:func:`check_values`) are
    rejected up front, each with one message naming what is accepted — before any kernel starts (papermill alone
    would inject anything, and the lesson would fail minutes later, deep inside).
    """
    defaults = notebook_params(lesson)
    out = {}
    if param_set is not None:
        if param_set not in PARAM_SETS:
            raise UnknownNameError("parameter set", param_set, PARAM_SETS)
        chosen = PARAM_SETS[param_set]
        # the set's values for every lesson, then its per-lesson values (``"lessons": {lesson: {...}}``: the smoke
        # set's shorter trainings), each only where this lesson has the parameter
        for values in (chosen, chosen.get("lessons", {}).get(lesson, {})):
            out.update({k: v for k, v in values.items() if k in defaults})
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
    merged = {**defaults, **out}
    # what was set, and the defaults whose validity depends on what was set (shots on the task's train split)
    check_values(lesson, merged, only=[k for k in merged if k in out or k in ("shots", "n_large")])
    return {k: _absolute(k, v) for k, v in out.items()}


@dataclasses.dataclass
class Run:
    """What :func:`setup` returns to a lesson: its parameters as given (for the record), the task's domains
    (photo first, then the distribution shifts), and a stopwatch for the record's ``timings``."""
    lesson: str
    params: dict
    domains: list
    timings: dict = dataclasses.field(default_factory=dict)
    clock: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def shifted(self) -> bool:
        """Whether the task has a distribution-shift domain (a real dataset may have none)."""
        return len(self.domains) > 1

    def lap(self, what: str) -> float:
        """Seconds since the last lap (or the start), stored as ``timings[what]``."""
        now = time.perf_counter()
        self.timings[what] = now - self.clock - sum(self.timings.values())
        return self.timings[what]

    def record(self, metrics: dict, claims: dict, **extra):
        """Write the lesson's record (:func:`fmcls_lib.results.write`) with the parameters as given and the
        timings, ``total`` included (wall-clock seconds since :func:`setup`)."""
        from . import results
        timings = {**self.timings, "total": time.perf_counter() - self.clock}
        return results.write(self.lesson, self.params, metrics, claims, timings=timings, **extra)


def runtime(lesson: str) -> str:
    """The lesson header's runtime sentence, computed from the last record of the lesson (``figures/``)."""
    from . import results
    try:
        rec = results.read(lesson)
    except FileNotFoundError:
        return "Runtime: no recorded run of this lesson yet (`make course` writes one)."
    total = rec.get("timings", {}).get("total")
    if not isinstance(total, (int, float)):
        return "Runtime: the last record of this lesson does not say how long it took."
    parts = {k: v for k, v in rec["timings"].items() if isinstance(v, (int, float)) and k != "total" and v >= 1}
    longest = max(parts, key=parts.get) if parts else None
    return (f"Runtime: the last recorded run of this lesson took {total / 60:.1f} min on {rec.get('threads')} "
            f"CPU thread(s) with {rec.get('splits')} splits" + (f", most of it in '{longest}' "
            f"({parts[longest] / 60:.1f} min)" if longest else "") + "; cached steps make a re-run faster.")


def setup(lesson: str, namespace: dict, seed: int = 0) -> Run:
    """The first cell of every lesson: read the lesson's parameters from ``namespace`` (the notebook's
    ``globals()``; only the names of its parameters cell), check them with the same rules as ``fmcls run``
    (one clear error before any work), seed and pin threads, and shrink the evaluation splits when
    ``smoke`` is set.  The smoke set's shorter trainings are parameters (``param_sets.json``), injected like
    any other."""
    from . import data, seed_everything

    names = notebook_params(lesson)
    missing = [k for k in names if k not in namespace]
    if missing:
        raise FmclsError(f"setup({lesson!r}): run the parameters cell first (missing {missing})")
    given = {k: namespace[k] for k in names}
    check_values(lesson, given)
    params = {k: v for k, v in given.items() if k not in provenance.NOT_RECORDED}  # as records keep them
    seed_everything(seed)
    if params.get("smoke"):
        data.set_split_sizes("smoke")  # small evaluation splits (and a real dataset's train split)
    return Run(lesson, params, list(data.domains(params["task"])))


PATH_PARAMETERS = ("backbone", "task", "second_task", "prefix_task", "descriptions", "generator")


def _absolute(name: str, v):
    """A parameter value naming a local file or folder, made absolute: the lesson's kernel runs in ``notebooks/``,
    not where the command was typed (``ARCH@file``, ``imagefolder:<root>``, a descriptions JSON, a generator
    folder).  Everything else is returned as it is."""
    if name not in PATH_PARAMETERS or not isinstance(v, str) or v.startswith("hf-hub:"):
        return v
    if v.startswith("imagefolder:"):
        return "imagefolder:" + os.path.abspath(v[len("imagefolder:"):])
    if "@" in v and os.path.isfile(v.split("@", 1)[1]):
        arch, path = v.split("@", 1)
        return f"{arch}@{os.path.abspath(path)}"
    return os.path.abspath(v) if name in ("descriptions", "generator") and os.path.exists(v) else v


def run_lesson(lesson: str, params: dict, out_dir, progress: bool = True) -> Path:
    """Execute ``lesson`` with papermill into ``out_dir``; returns the executed notebook's path.

    The kernel inherits this process's environment: ``$FMCLS_FIGURES`` (where the record goes) and
    ``$FMCLS_THREADS`` (torch's intra-op threads, read by ``fm.seed_everything``; set to
    :data:`provenance.RECORD_THREADS` here if unset, since the thread count changes trained weights)."""
    import papermill

    os.environ["FMCLS_THREADS"] = os.environ.get("FMCLS_THREADS") or str(provenance.RECORD_THREADS)
    out = Path(out_dir) / f"{lesson}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOKS / f"{lesson}.ipynb"), str(out), parameters=params,
                               cwd=str(NOTEBOOKS), progress_bar=progress, kernel_name="python3")
    return out


def _fingerprint(lesson: str, params: dict) -> str:
    """A run's stamp: the record fingerprint of the lesson with these (resolved) parameters."""
    return provenance.fingerprint(lesson, params)


def _route_figures(param_set, out_dir: Path, overridden: bool = False) -> Path:
    """Where a run's records and figures go: only the unchanged ``full`` set refreshes the course's ``figures/``
    (with torch pinned to :data:`provenance.RECORD_THREADS` threads, which ``fmcls check`` requires of committed
    records); anything else writes to ``<out_dir>/figures``.  Set in the environment, which the lessons' kernels
    inherit."""
    committed = param_set == "full" and not overridden
    figures = provenance.FIGURES if committed else Path(out_dir) / "figures"
    os.environ["FMCLS_FIGURES"] = str(figures)
    if committed:
        want = str(provenance.RECORD_THREADS)
        if os.environ.get("FMCLS_THREADS", want) != want:
            print(f"note: FMCLS_THREADS={os.environ['FMCLS_THREADS']} ignored: committed records are made with "
                  f"{want} threads", file=sys.stderr)
        os.environ["FMCLS_THREADS"] = want
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
    todo = [les for les in lessons() if only is None or les in only]
    resolved = {les: resolve_params(les, param_set) for les in todo}  # every value checked before anything runs
    # each builds into the cache only if the shipped copy is missing or corrupt
    backbones.load_clip("tiny")
    backbones.load_generator("tiny")
    backbones.load_ssl("tiny-dino")
    timings = {}
    for lesson in tqdm(todo, desc=f"course ({param_set})", unit="lesson"):
        params = resolved[lesson]
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


COUNT_COLUMNS = ("shown", "refuted", "undecided", "identity")


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _claim_row(name: str, c: dict) -> str:
    if c.get("kind") == "identity":
        verdict, test, effect, p = "identity (checked)", "exact, asserted", "", ""
    else:
        verdict = f"**{c['verdict']}**" if c.get("verdict") in ("shown", "refuted") else c.get("verdict", "no verdict")
        test = c.get("test", "")
        effect = f"{c['effect']:+.3f}" if isinstance(c.get("effect"), (int, float)) else ""
        p = f"{c['p']:.2g}" if isinstance(c.get("p"), (int, float)) else ""
    return f"| {name} | {verdict} | {_cell(test)} | {effect} | {p} | {_cell(c.get('evidence', ''))} |"


def _metric_tables(metrics: dict) -> list[str]:
    lines = []
    rows = {m: r for m, r in metrics.items() if isinstance(r, dict)}
    for kind in (False, True):  # a table by domain, then one by shots
        part = {m: r for m, r in rows.items() if all(str(k).isdigit() for k in r) == kind}
        cols = sorted({str(c) for r in part.values() for c in r}, key=lambda c: (len(c), c) if kind else c)
        if not part:
            continue
        lines += ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), (int, float)) else ""
                                          for c in cols) + " |" for m, r in part.items()]
        lines.append("")
    return lines


def summary_text(figures=None) -> str:
    """The text of ``figures/README.md`` for the records in ``figures``: a course-wide table of verdict counts,
    then per lesson its counts, metrics tables, one row per claim (verdict, test, effect, p, evidence) and its
    figures."""
    from . import results

    figures = Path(figures or results.figures_dir())
    recs = [json.loads(p.read_text()) for p in sorted(figures.glob("[0-9][0-9]_*.json"))]
    counts = {r["lesson"]: r.get("verdicts") or results.counts(r.get("claims", {})) for r in recs}
    head = "| lesson | " + " | ".join(k if k != "identity" else "identities" for k in COUNT_COLUMNS) + " | claims |"
    total = {k: sum(c.get(k, 0) for c in counts.values()) for k in COUNT_COLUMNS}
    lines = ["# Course results", "",
             "Written by `fmcls course` from each lesson's `figures/<lesson>.json`; every number below was measured "
             "by the lesson. Each lecture claim has one verdict at 95 %: **shown** (the lecture's direction, "
             "significant), **refuted** (the opposite direction, significant) or **undecided**, from the test named "
             "in its row; identities are asserted exactly, not voted on. `fmcls check` verifies that every record is "
             "what the current code produces.", "",
             head, "|---" * (len(COUNT_COLUMNS) + 2) + "|"]
    lines += [f"| [{les}](#{les}) | " + " | ".join(str(c.get(k, 0)) for k in COUNT_COLUMNS)
              + f" | {sum(c.get(k, 0) for k in COUNT_COLUMNS)} |" for les, c in counts.items()]
    lines += ["| **total** | " + " | ".join(f"**{total[k]}**" for k in COUNT_COLUMNS)
              + f" | **{sum(total.values())}** |", ""]
    for rec in recs:
        c = counts[rec["lesson"]]
        meta = [f"params: `{json.dumps(rec.get('params'))}`"] + [
            f"{k}: `{rec[k]}`" for k in ("splits", "threads", "fingerprint") if k in rec]
        lines += [f"## {rec['lesson']}", "", " · ".join(meta), "",
                  "**" + " · ".join(f"{c.get(k, 0)} {k if k != 'identity' else 'identities'}"
                                    for k in COUNT_COLUMNS) + "**", ""]
        lines += _metric_tables(rec.get("metrics", {}))
        lines += ["| claim | verdict | test | effect | p | evidence |", "|---|---|---|---|---|---|"]
        lines += [_claim_row(k, cl) for k, cl in rec.get("claims", {}).items()]
        lines += [""] + [f"![{p.stem}]({p.name})" for p in sorted(figures.glob(f"{rec['lesson']}*.png"))]
        lines.append("")
    return "\n".join(lines)


def write_summary(figures=None) -> Path:
    """Write ``figures/README.md`` (:func:`summary_text`): every lesson's verdict counts, metrics and claims, read
    from its record."""
    from . import results

    figures = Path(figures or results.figures_dir())
    path = figures / "README.md"
    atomic_write_bytes(path, summary_text(figures).encode())
    return path


def prepare(param_set: str, out_dir, overrides: dict | None = None, solutions: bool = False) -> list[Path]:
    """Parameterised, unexecuted copies of every lesson (what nbval runs under ``make test``); with
    ``solutions`` the instructor versions (the library's exercise solutions filled in,
    :func:`fmcls_lib.exercises.fill_solutions`) instead of the notebooks as shipped."""
    import tempfile

    import papermill

    from . import exercises

    out = []
    for lesson in lessons():
        path = Path(out_dir) / f"{lesson}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        src = NOTEBOOKS / f"{lesson}.ipynb"
        with tempfile.TemporaryDirectory() as tmp:
            if solutions:
                src = exercises.instructor_notebook(src, Path(tmp) / src.name)
            papermill.execute_notebook(str(src), str(path), parameters=resolve_params(lesson, param_set, overrides),
                                       prepare_only=True)
        out.append(path)
    return out


def add_parsers(sub):
    pp = sub.add_parser("prepare", help="write parameterised copies of the lessons (for nbval)")
    pp.add_argument("out")
    pp.add_argument("--set", dest="param_set", default="smoke", choices=sorted(PARAM_SETS))
    pp.add_argument("--solutions", action="store_true",
                    help="the instructor versions: the library's exercise solutions filled into the stubs")
    pp.set_defaults(func=lambda a: print(*prepare(a.param_set, a.out, solutions=a.solutions), sep="\n") or 0)
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
    s = sub.add_parser("summary", help="rewrite figures/README.md from the records (no lesson runs)")
    s.add_argument("figures", nargs="?", default=None, help="the records' folder (default: the course's figures/)")
    s.set_defaults(func=lambda a: print(write_summary(a.figures)) or 0)


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
