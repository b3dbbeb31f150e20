"""Records that match the code: the fingerprint, `provenance.check_records` (what `fmcls check` runs), the pinned
thread count, and two runs of one lesson giving identical records."""
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fmcls_lib import course, data, provenance, results

ROOT = Path(__file__).resolve().parent.parent
LESSON = "05_wise_ft"


@pytest.fixture
def frozen(tmp_path, monkeypatch):
    """The fingerprint read from copies of the notebooks, the library source and (fake) shipped weights, so that
    edits here change them and edits elsewhere in the tree (other sessions at work) do not."""
    nbs, pkg, weights = tmp_path / "notebooks", tmp_path / "fmcls_lib", tmp_path / "weights"
    shutil.copytree(provenance.NOTEBOOKS, nbs, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(provenance.PACKAGE, pkg, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    weights.mkdir()
    (weights / "clip-tiny.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(provenance, "NOTEBOOKS", nbs)
    monkeypatch.setattr(provenance, "PACKAGE", pkg)
    monkeypatch.setattr(provenance, "WEIGHTS", weights)
    return {"notebooks": nbs, "package": pkg, "weights": weights, "figures": tmp_path / "figures"}


@pytest.fixture
def as_committed(monkeypatch):
    """What `make course` runs with: the full evaluation splits and 2 intra-op threads."""
    monkeypatch.setattr(data, "_split_size", "full")
    old = torch.get_num_threads()
    torch.set_num_threads(provenance.RECORD_THREADS)
    yield
    torch.set_num_threads(old)


def _write(figures, params=None, lesson=LESSON):
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.8, rng.random(200) < 0.5
    claims = {"fine_tuning_improves_id": results.beats(a, b, "fine-tuned vs zero-shot: "),
              "lc_wise_equals_output_ensemble": results.identity("asserted in the notebook")}
    params = provenance.record_params(lesson) if params is None else params
    return results.write(lesson, params, {"zero_shot": {"photo": 0.5}}, claims, out_dir=figures,
                         timings={"total": 1.0})


def _one_line(figures, *words):
    lines = provenance.check_records(figures)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{LESSON}.json: ") and lines[0].endswith("regenerate with `make course`"), lines
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_a_record_made_by_this_code_passes(frozen, as_committed):
    path = _write(frozen["figures"])
    rec = json.loads(path.read_text())
    assert rec["fingerprint"] == provenance.fingerprint(LESSON, rec["params"])
    assert rec["threads"] == 2 and rec["splits"] == "full"
    assert set(rec["params"]) == set(course.notebook_params(LESSON)) - {"interactive", "executor"}
    assert provenance.check_records(frozen["figures"]) == []


def test_an_edited_notebook_library_file_or_weight_makes_the_record_stale(frozen, as_committed):
    _write(frozen["figures"])
    nb_path = frozen["notebooks"] / f"{LESSON}.ipynb"
    original = nb_path.read_text()
    nb = json.loads(original)
    code = next(c for c in nb["cells"]
                if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", []))
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["outputs do not count\n"]}]
    code["execution_count"] = 7
    nb_path.write_text(json.dumps(nb))
    assert provenance.check_records(frozen["figures"]) == []          # outputs and counts are not the code
    code["source"] = ["x = 1  # an edit\n"] + list(code["source"])
    nb_path.write_text(json.dumps(nb))
    _one_line(frozen["figures"], "fingerprint", "other code")
    nb_path.write_text(original)
    assert provenance.check_records(frozen["figures"]) == []

    lib = frozen["package"] / "heads.py"
    lib.write_text(lib.read_text() + "\n# an edit\n")
    _one_line(frozen["figures"], "fingerprint")
    _write(frozen["figures"])
    assert provenance.check_records(frozen["figures"]) == []

    (frozen["weights"] / "clip-tiny.safetensors").write_bytes(b"other weights")
    _one_line(frozen["figures"], "fingerprint")


@pytest.mark.parametrize("change, words", [
    ("param_value", ["params['alpha_step'] is 0.125, the notebook default is ", "`full` set"]),
    ("param_missing", ["params lack l2_lambda", "every parameter except interactive, executor"]),
    ("param_extra", ["params have keep_if", "does not"]),
    ("smoke_splits", ['splits is "smoke", not "full"']),
    ("threads", ["threads is 4, not 2", "FMCLS_THREADS=2"]),
    ("no_verdict", ["claims without a verdict", "observation_1_e2e"]),
    ("no_fingerprint", ["has no fingerprint"]),
])
def test_each_difference_is_one_line_naming_the_record(frozen, as_committed, monkeypatch, change, words):
    params = provenance.record_params(LESSON)
    if change == "param_value":
        assert params["alpha_step"] != 0.125
        params["alpha_step"] = 0.125
    elif change == "param_missing":
        del params["l2_lambda"]
    elif change == "param_extra":
        params["keep_if"] = True
    elif change == "smoke_splits":
        monkeypatch.setattr(data, "_split_size", "smoke")
    elif change == "threads":
        torch.set_num_threads(4)
    path = _write(frozen["figures"], params)
    rec = json.loads(path.read_text())
    if change == "no_verdict":
        rec["claims"]["observation_1_e2e"] = {"holds": True, "evidence": "by eye"}
    if change == "no_fingerprint":
        del rec["fingerprint"]
    path.write_text(json.dumps(rec))
    _one_line(frozen["figures"], *words)


def test_missing_records_are_reported_when_complete(frozen, as_committed):
    _write(frozen["figures"])
    assert provenance.check_records(frozen["figures"]) == []
    missing = provenance.check_records(frozen["figures"], complete=True)
    assert len(missing) == len(course.lessons()) - 1
    assert all("missing" in line and "regenerate with `make course`" in line for line in missing)


def test_cli_check_prints_the_stale_lines(frozen, as_committed, capsys):
    from fmcls_lib import cli
    path = _write(frozen["figures"], {**provenance.record_params(LESSON), "epochs": 3})
    for lesson in course.lessons():
        if lesson != LESSON:
            _write(frozen["figures"], provenance.record_params(lesson), lesson=lesson)
    course.write_summary(frozen["figures"])
    assert cli.main(["check", "--figures", str(frozen["figures"])]) == 1
    out = capsys.readouterr().out
    assert f"{LESSON}.json: params['epochs'] is 3" in out and "regenerate with `make course`" in out
    _write(frozen["figures"])
    assert cli.main(["check", "--figures", str(frozen["figures"])]) == 1      # the summary is now stale
    assert "README.md: not the summary" in capsys.readouterr().out
    course.write_summary(frozen["figures"])
    assert cli.main(["check", "--figures", str(frozen["figures"])]) == 0
    assert f"records: all {len(course.lessons())}" in capsys.readouterr().out
    assert path.exists()


def test_course_stamps_use_the_record_fingerprint():
    p = {"smoke": True, "seeds": 1}
    assert course._fingerprint(LESSON, p) == provenance.fingerprint(LESSON, p)
    assert provenance.fingerprint(LESSON, p) != provenance.fingerprint(LESSON, {**p, "seeds": 2})
    # a record's params are stored rounded; its fingerprint is recomputed from them
    assert provenance.fingerprint(LESSON, {"lr": 0.123456}) == provenance.fingerprint(LESSON, {"lr": 0.1235})


def test_runs_pin_the_thread_count(monkeypatch, tmp_path):
    import papermill
    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: seen.append(os.environ["FMCLS_THREADS"]))
    monkeypatch.delenv("FMCLS_THREADS", raising=False)
    course.run_lesson(LESSON, {}, tmp_path)
    monkeypatch.setenv("FMCLS_THREADS", "3")
    course.run_lesson(LESSON, {}, tmp_path)
    assert seen == ["2", "3"]
    monkeypatch.setenv("FMCLS_FIGURES", str(tmp_path / "f"))
    course._route_figures("full", tmp_path)           # records for figures/: always 2 threads
    assert os.environ["FMCLS_THREADS"] == "2"


def test_committed_records_match_the_code():
    """Every committed figures/<lesson>.json is what `make course` makes with the current code (else regenerate)."""
    stale = provenance.check_records(ROOT / "figures", complete=True)
    assert not stale, "\n".join(stale)


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [path or "/"]


def test_same_lesson_twice_gives_identical_records(micro, tmp_path, monkeypatch):
    """Lesson 01 on the micro CLIP with smoke settings, run twice (the first encodes its features, the second reads
    them from the cache): the records are identical apart from `timings`."""
    lesson = "01_clip_zero_shot"
    params = course.resolve_params(lesson, "smoke", {"backbone": "micro"})
    monkeypatch.delenv("FMCLS_THREADS", raising=False)
    recs, t0 = [], time.time()
    for run in ("a", "b"):
        monkeypatch.setenv("FMCLS_FIGURES", str(tmp_path / run / "figures"))
        course.run_lesson(lesson, params, tmp_path / run, progress=False)
        recs.append(json.loads((tmp_path / run / "figures" / f"{lesson}.json").read_text()))
    print(f"two runs of {lesson}: {time.time() - t0:.0f} s")
    assert recs[0]["threads"] == 2            # the kernel inherited FMCLS_THREADS from run_lesson
    different = _diff({k: v for k, v in recs[0].items() if k != "timings"},
                      {k: v for k, v in recs[1].items() if k != "timings"})
    assert not different, f"{lesson}: two runs of the same code differ in {different}"
