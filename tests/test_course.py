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


def test_the_figures_folder_is_read_when_used_not_when_imported(tmp_path, monkeypatch):
    """``$FMCLS_FIGURES`` set after import still counts, and a committed (full) run writes to the course's own
    figures/ whatever the environment said before (it once went to the folder of import time)."""
    from fmcls_lib import provenance, results
    monkeypatch.setenv("FMCLS_THREADS", "2")  # _route_figures pins it; restored after the test
    monkeypatch.setenv("FMCLS_FIGURES", str(tmp_path / "later"))
    assert results.figures_dir() == tmp_path / "later"
    assert course._route_figures("full", tmp_path / "out") == provenance.FIGURES == provenance.ROOT / "figures"
    assert results.figures_dir() == provenance.FIGURES
    assert course._route_figures("smoke", tmp_path / "out") == results.figures_dir() == tmp_path / "out" / "figures"
    monkeypatch.delenv("FMCLS_FIGURES")
    assert results.figures_dir() == provenance.FIGURES


def test_summary_counts_verdicts_per_lesson_and_lists_every_claim(tmp_path):
    import numpy as np

    from fmcls_lib import results
    a = np.arange(100) % 10 != 0                     # 90 % right
    b = np.arange(100) % 2 == 0                      # 50 % right
    claims = {"probe_beats_zero_shot": results.beats(a, b, "probe vs zero-shot: "),
              "zero_shot_beats_probe": results.beats(b, a),
              "tie": results.beats(a, a),
              "alpha_0_is_zero_shot": results.identity("asserted")}
    results.write("01_clip_zero_shot", {"seeds": 1}, {"zero_shot": {"photo": 0.5, "ood": 0.25},
                                                      "linear_probe_shots": {"1": 0.4, "16": 0.8}},
                  claims, out_dir=tmp_path)
    results.write("05_wise_ft", {"seeds": 1}, {}, {"x": results.beats(a, b)}, out_dir=tmp_path)
    text = course.write_summary(tmp_path).read_text()
    assert text == course.summary_text(tmp_path)
    lines = text.splitlines()
    assert "| lesson | shown | refuted | undecided | identities | claims |" in lines
    assert "| [01_clip_zero_shot](#01_clip_zero_shot) | 1 | 1 | 1 | 1 | 4 |" in lines
    assert "| **total** | **2** | **1** | **1** | **1** | **5** |" in lines
    assert lines.index("| **total** | **2** | **1** | **1** | **1** | **5** |") < lines.index("## 01_clip_zero_shot")
    assert "**1 shown · 1 refuted · 1 undecided · 1 identities**" in lines
    assert "| zero_shot | 0.250 | 0.500 |" in text and "| linear_probe_shots | 0.400 | 0.800 |" in text  # metrics kept
    row = next(line for line in lines if line.startswith("| probe_beats_zero_shot |"))
    c = claims["probe_beats_zero_shot"]
    assert f"| **shown** | McNemar exact | +0.400 | {c['p']:.2g} | probe vs zero-shot: 0.900 vs 0.500" in row
    assert any(line.startswith("| zero_shot_beats_probe | **refuted** |") for line in lines)
    assert any(line.startswith("| tie | undecided | McNemar exact | +0.000 | 1 |") for line in lines)
    assert any(line.startswith("| alpha_0_is_zero_shot | identity (checked) |") for line in lines)


# ---------------------------------------------------------------- values checked before anything runs (issue 13.6)

@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if a lesson would start."""
    import papermill
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook was run"))
    monkeypatch.setattr(course, "run_lesson", lambda *a, **k: pytest.fail("a notebook was run"))


def _cli_refuses(capsys, *argv):
    import time

    from fmcls_lib import cli
    t = time.time()
    assert cli.main(["run", *argv]) == 2
    assert time.time() - t < 30  # seconds, not a kernel's start-up and a lesson's first minute
    return capsys.readouterr().err


def test_alpha_step_must_divide_1(no_kernel, capsys):
    with pytest.raises(course.ParameterError) as e:
        course.resolve_params("05_wise_ft", None, {"alpha_step": "0.3"})
    msg = str(e.value)
    assert "'alpha_step'" in msg and "got 0.3" in msg and "0, 0.3, 0.6, 0.9: no α = 1" in msg
    assert "divides 1" in msg and all(v in msg for v in ("0.05", "0.1", "0.125", "0.2", "0.25", "0.5"))
    assert msg in _cli_refuses(capsys, "05_wise_ft", "-p", "alpha_step", "0.3")
    for ok in ("0.125", "0.5", "1", "0.05"):
        course.resolve_params("05_wise_ft", None, {"alpha_step": ok})
    for bad in ("0", "-0.1", "1.5", "0.15"):
        with pytest.raises(course.ParameterError, match="alpha_step"):
            course.resolve_params("05_wise_ft", None, {"alpha_step": bad})


def test_shots_must_be_positive_and_fit_the_train_split(no_kernel, capsys):
    with pytest.raises(course.ParameterError) as e:
        course.resolve_params("01_clip_zero_shot", None, {"shots": "[0]"})
    msg = str(e.value)
    assert "'shots'" in msg and "got [0]" in msg and "each ≥ 1 and ≤ 64" in msg and "world/shapes" in msg
    assert msg in _cli_refuses(capsys, "01_clip_zero_shot", "-p", "shots", "[0]")
    for bad in ("[]", "[1, 65]", "[2.5]"):
        with pytest.raises(course.ParameterError, match="shots"):
            course.resolve_params("02_tip_adapter", None, {"shots": bad})
    # the bound is the chosen task's train split (world/objects has 16 images per class)
    with pytest.raises(course.ParameterError, match="≤ 16"):
        course.resolve_params("01_clip_zero_shot", None, {"task": "world/objects", "shots": "[32]"})
    assert course.resolve_params("01_clip_zero_shot", None, {"shots": "[1, 64]"}) == {"shots": [1, 64]}


def test_task_must_be_a_known_dataset(no_kernel, capsys):
    with pytest.raises(fm.UnknownNameError) as e:
        course.resolve_params("01_clip_zero_shot", None, {"task": "world/shape"})
    msg = str(e.value)
    assert msg.startswith("parameter 'task' of 01_clip_zero_shot: unknown dataset 'world/shape'; accepted: ")
    assert all(n in msg for n in fm.data.names())
    assert msg in _cli_refuses(capsys, "01_clip_zero_shot", "-p", "task", "world/shape")
    with pytest.raises(fm.UnknownNameError, match="'second_task'.*world/colors"):
        course.resolve_params("03_synthetic_data", None, {"second_task": "colors"})


def test_other_values_are_checked_with_what_is_accepted(no_kernel):
    bad = [("01_clip_zero_shot", "seeds", "0", "whole number ≥ 1"),
           ("01_clip_zero_shot", "backbone", "tiyn", "accepted: tiny, tiny-vit, micro, <arch>/<tag>"),
           ("04_cafo", "ssl", "tiny_dino", "tiny-dino"),
           ("04_cafo", "generator", "big", "stabilityai/sd-turbo"),
           ("05_wise_ft", "epochs", "0", "whole number ≥ 1"),
           ("05_wise_ft", "e2e_lr", "-1.0", "number > 0"),
           ("05_wise_ft", "sweep_epochs", "[]", "list of one or more whole numbers ≥ 1"),
           ("02_tip_adapter", "search_step", "[200]", "two whole numbers ≥ 1"),
           ("06_soups_and_landscapes", "n_ingredients", "1", "≥ 2"),
           ("06_soups_and_landscapes", "n_large", "9", "≤ n_ingredients = 8"),
           ("06_soups_and_landscapes", "grid_size", "1", "≥ 2"),
           ("06_soups_and_landscapes", "executor", "spark", "'ray'"),
           ("06_soups_and_landscapes", "swa_lrs", "1e-3", "must be list like its default"),
           ("06_soups_and_landscapes", "swa_lrs", "[]", "a list of one or more learning rates > 0"),
           ("05_wise_ft", "sweep_lrs", "[1e-3, -1]", "a list of one or more learning rates > 0")]
    for lesson, name, value, accepted in bad:
        if name not in course.notebook_params(lesson):
            continue  # the lesson no longer has this parameter
        with pytest.raises(fm.FmclsError) as e:
            course.resolve_params(lesson, None, {name: value})
        assert f"'{name}'" in str(e.value) and accepted in str(e.value), (name, str(e.value))
    real = {"backbone": "ViT-B-32/openai", "ssl": "vit_small_patch16_224.dino", "generator": "stabilityai/sd-turbo"}
    assert course.resolve_params("04_cafo", None, real) == real  # real-path names: the loader checks the rest


def test_every_default_and_parameter_set_is_accepted():
    for lesson in course.lessons():
        course.check_values(lesson, course.notebook_params(lesson))
        for name in course.PARAM_SETS:
            course.resolve_params(lesson, name)
