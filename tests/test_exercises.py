"""Exercises: every registered exercise accepts its solution, says "not attempted" for nbgrader's stub and gives
its hint for each known mistake; every lesson has at least two, placed in its notebook as nbgrader solution
cells; nbgrader's own ClearSolutions turns the instructor version back into exactly the shipped notebook."""
import json
import textwrap

import pytest
import torch

import fmcls_lib as fm
from fmcls_lib import course, exercises


def _stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("name", exercises.names())
def test_solution_is_correct_and_stub_not_attempted(name):
    ex = exercises.get(name)
    res = exercises.check(name, ex.solution)
    assert res.status == "correct", res
    assert exercises.check(name, _stub).status == "not attempted"
    assert len(ex.cases()) >= 2  # random inputs and at least one edge case


@pytest.mark.parametrize("name", exercises.names())
def test_each_known_mistake_gets_its_hint_and_never_the_solution(name):
    ex = exercises.get(name)
    body = exercises.solution_body(name)
    for wrong, hint in ex.mistakes:
        res = exercises.check(name, wrong)
        assert res.status == "wrong" and hint in res.message, (res, hint)
        assert body not in res.message


def test_check_reports_shape_errors_and_exceptions():
    res = exercises.check("zero_shot_logits", lambda f, W: 100 * W @ f.T)
    assert res.status == "wrong" and "expected shape (6, 4), got (4, 6)" in res.message
    res = exercises.check("zero_shot_logits", lambda f, W: f.undefined)
    assert res.status == "wrong" and "AttributeError" in res.message
    with pytest.raises(fm.UnknownNameError, match="zero_shot_logits"):
        exercises.check("zero_shot_logit", _stub)
    with pytest.raises(TypeError, match="the function you wrote"):
        exercises.check("zero_shot_logits", torch.zeros(3))


def test_an_answer_that_changes_its_inputs_cannot_change_the_reference():
    def sloppy(f, W):
        out = 100 * f @ W.T
        f.zero_()
        return out
    assert exercises.check("zero_shot_logits", sloppy).status == "correct"


@pytest.mark.parametrize("lesson", course.lessons())
def test_lesson_exercises_round_trip_through_nbgrader(lesson):
    shipped = json.loads((course.NOTEBOOKS / f"{lesson}.ipynb").read_text())
    cells = exercises.exercise_cells(shipped)
    names = [n for _, n in cells]
    assert len(names) >= 2, f"{lesson} has {len(names)} exercises"
    assert sorted(names) == sorted(exercises.names(lesson))  # each registered exercise exactly once
    instructor = exercises.fill_solutions(shipped)
    text = lambda c: c["source"] if isinstance(c["source"], str) else "".join(c["source"])  # noqa: E731
    # a solution body as the instructor version holds it: indented like the stub (inside the def), so a body of
    # several lines is searched for as it stands there
    indented = lambda name: textwrap.indent(exercises.solution_body(name), "    ")  # noqa: E731
    for i, name in cells:
        assert exercises.BEGIN in text(instructor["cells"][i]) and indented(name) in text(instructor["cells"][i])
    student = exercises.student_notebook(instructor)
    assert [text(c) for c in student["cells"]] == [text(c) for c in shipped["cells"]]
    for _, name in cells:  # no solution text anywhere in the generated student version
        assert not any(indented(name) in text(c) for c in student["cells"])
