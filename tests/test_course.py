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


def test_only_full_runs_refresh_the_committed_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("FMCLS_FIGURES", str(tmp_path / "elsewhere"))  # restored after the test
    course.run_course("smoke", tmp_path / "out", only=[])
    assert (tmp_path / "out" / "figures" / "README.md").exists()
    assert course.os.environ["FMCLS_FIGURES"] == str(tmp_path / "out" / "figures")


def test_summary_reads_every_lesson_record(tmp_path):
    from fmcls_lib import results
    results.write("01_clip_zero_shot", {"seeds": 1}, {"zero_shot": {"photo": 0.5, "ood": 0.25},
                                                      "linear_probe_shots": {"1": 0.4, "16": 0.8}},
                  {"c": results.claim(False, "because")}, out_dir=tmp_path)
    text = course.write_summary(tmp_path).read_text()
    assert "| zero_shot | 0.250 | 0.500 |" in text and "| linear_probe_shots | 0.400 | 0.800 |" in text
    assert "does NOT hold — because" in text
