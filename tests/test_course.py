import pytest

import fmcls_lib as fm
from fmcls_lib import course


def test_lessons_and_their_parameters():
    assert "01_clip_zero_shot" in course.lessons()
    p = course.notebook_params("01_clip_zero_shot")
    assert {"backbone", "task", "shots", "seeds", "smoke", "interactive"} <= set(p)


def test_param_sets_and_overrides_are_validated():
    assert course.resolve_params("01_clip_zero_shot", "smoke")["smoke"] is True
    got = course.resolve_params("01_clip_zero_shot", None, {"seeds": "2", "task": "world/colors",
                                                            "shots": "[1, 4]"})
    assert got == {"seeds": 2, "task": "world/colors", "shots": [1, 4]}
    with pytest.raises(fm.UnknownNameError, match="seeds=3"):
        course.resolve_params("01_clip_zero_shot", None, {"alpha_step": "0.1"})
    with pytest.raises(fm.FmclsError, match="must be int"):
        course.resolve_params("01_clip_zero_shot", None, {"seeds": "three"})
    with pytest.raises(fm.FmclsError, match="must be bool"):
        course.resolve_params("01_clip_zero_shot", None, {"smoke": "1"})
    with pytest.raises(fm.UnknownNameError, match="smoke"):
        course.resolve_params("01_clip_zero_shot", "nightly")
    with pytest.raises(fm.UnknownNameError, match="01_clip_zero_shot"):
        course.resolve_params("99_nothing")


def test_cli_rejects_unknown_parameter_before_running(capsys):
    from fmcls_lib import cli
    assert cli.main(["run", "01_clip_zero_shot", "-p", "nope", "1"]) == 2
    assert "accepted" in capsys.readouterr().err
