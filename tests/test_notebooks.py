"""Lessons run end to end with non-default parameters; assertions read the record each one writes.

(``make test`` also runs every lesson with the ``smoke`` parameter set under ``pytest --nbval-lax``.)
"""
import json
from pathlib import Path

import numpy as np
import pytest

from fmcls_lib import course, results


def test_lesson_01_with_other_task_shots_and_seeds(tmp_path):
    params = {"task": "world/colors", "shots": [2, 8], "seeds": 2, "smoke": False, "interactive": False}
    out = course.run_lesson("01_clip_zero_shot", course.resolve_params("01_clip_zero_shot", None, params),
                            tmp_path, progress=False)
    assert out.exists()
    rec = results.read("01_clip_zero_shot")
    assert rec["params"]["task"] == "world/colors" and rec["params"]["shots"] == [2, 8]
    m = rec["metrics"]
    assert set(m["linear_probe_shots"]) == {"2", "8"}
    domains = {"photo", "sketch", "painting", "pixel", "ood"}
    for method in ("zero_shot", "linear_probe", "linear_probe_full", "zero_shot_openai_80"):
        assert set(m[method]) == domains
        assert all(0.0 <= v <= 1.0 for v in m[method].values())
    assert m["zero_shot"]["ood"] == pytest.approx(
        sum(m["zero_shot"][d] for d in ("sketch", "painting", "pixel")) / 3, abs=1e-3)
    # every claim has a verdict from a test on the numbers of the record, so it must agree with them
    c, zs, shifts = rec["claims"], m["zero_shot"], ("sketch", "painting", "pixel")
    assert all(v["verdict"] in ("shown", "refuted", "undecided") and v["test"] for v in c.values())
    assert c["photo_easiest"]["effect"] == pytest.approx(min(zs["photo"] - zs[d] for d in shifts), abs=1e-3)
    if c["photo_easiest"]["verdict"] == "shown":
        assert all(zs[d] < zs["photo"] for d in shifts)
    assert c["full_probe_beats_zero_shot"]["effect"] == pytest.approx(m["linear_probe_full"]["photo"] - zs["photo"],
                                                                      abs=1e-3)
    few = c["zero_shot_matches_few_shot_probe"]  # zero-shot against the 2-shot probe, over the 2 draws
    assert few["seeds"] == 2 and few["effect"] == pytest.approx(zs["photo"] - m["linear_probe_shots"]["2"], abs=1e-3)
    assert c["zero_shot_effectively_robust"]["test"] == "paired bootstrap over images"
    assert m["linear_probe"]["photo"] == pytest.approx(m["linear_probe_shots"]["8"], abs=1e-3)
    nb = json.loads(Path(out).read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert (results.figures_dir() / "01_clip_zero_shot_prompts.png").exists()


def test_lesson_02_with_other_shots(tmp_path):
    params = {"shots": [2, 4], "seeds": 1, "clip_adapter_epochs": 20, "tip_f_epochs": 5, "interactive": False}
    course.run_lesson("02_tip_adapter", course.resolve_params("02_tip_adapter", None, params), tmp_path,
                      progress=False)
    rec = results.read("02_tip_adapter")
    m, c = rec["metrics"], rec["claims"]
    assert rec["params"]["shots"] == [2, 4]
    for method in ("zero_shot", "linear_probe", "clip_adapter", "tip_adapter", "tip_adapter_f"):
        assert set(m[f"{method}_shots"]) == {"2", "4"}
        assert m[method]["photo"] == pytest.approx(m[f"{method}_shots"]["4"], abs=1e-3)
        assert set(m[method]) == {"photo", "sketch", "painting", "pixel", "ood"}
    assert all(v["verdict"] in ("shown", "refuted", "undecided") and v["test"] for v in c.values())
    assert c["tip_adapter_beats_zero_shot"]["effect"] == pytest.approx(
        m["tip_adapter"]["photo"] - m["zero_shot"]["photo"], abs=1e-3)
    assert c["tip_adapter_beats_linear_probe_at_fewest_shots"]["effect"] == pytest.approx(
        m["tip_adapter_shots"]["2"] - m["linear_probe_shots"]["2"], abs=1e-3)
    assert c["tip_adapter_trains_faster_than_clip_adapter"]["timed"]  # wall clock: the one claim that varies
    assert set(rec["test_selection_inflation"]) == {"tip_adapter", "tip_adapter_f"}
    assert set(rec["timings"]["train_seconds"]) == {"zero_shot", "linear_probe", "clip_adapter", "tip_adapter",
                                                    "tip_adapter_f"}


def _verdicts_follow_effects(claims):
    """Each verdict agrees with its effect's sign (and, for a single test, with its p-value)."""
    for name, c in claims.items():
        assert c["verdict"] in ("shown", "refuted", "undecided", "checked"), name
        if c["verdict"] in ("shown", "refuted"):
            assert (c["effect"] > 0) == (c["verdict"] == "shown"), name
            assert "parts" in c or c["p"] < 0.05, name


def test_lesson_05_with_other_alpha_step_and_task(tmp_path):
    params = {"task": "world/colors", "alpha_step": 0.25, "epochs": 3, "seeds": 2, "sweep_lrs": [1e-3], "sweep_epochs": [2],
              "curve_per_class": 10, "interactive": False}
    course.run_lesson("05_wise_ft", course.resolve_params("05_wise_ft", None, params), tmp_path, progress=False)
    rec = results.read("05_wise_ft")
    m, c = rec["metrics"], rec["claims"]
    assert rec["params"]["task"] == "world/colors" and rec["params"]["alpha_step"] == 0.25 and rec["params"]["seeds"] == 2
    assert set(rec["curves"]["alphas"]["e2e_ft"]) == {"0", "0.25", "0.5", "0.75", "1"}
    assert rec["curves"]["images_per_domain"] == 10 * 10  # curve_per_class x classes
    # the endpoints of the WiSE curve are the zero-shot and fine-tuned models themselves
    assert m["wise_e2e_0"] == m["zero_shot"] and m["wise_e2e_1"] == m["e2e_ft"] and m["wise_lc_1"] == m["lc_ft"]
    assert all(len(a) == 2 for a in rec["alpha_val"].values())  # an alpha chosen on validation per seed
    _verdicts_follow_effects(c)
    assert c["lc_wise_equals_output_ensemble"]["kind"] == "identity"
    erodes = c["e2e_fine_tuning_erodes_robustness"]  # over 2 seeds: t over images and over seeds
    assert erodes["seeds"] == 2 and erodes["test"] == "t over images + paired t over seeds"
    assert erodes["effect"] == pytest.approx(m["zero_shot"]["ood"] - m["e2e_ft"]["ood"], abs=1e-3)
    assert c["fine_tuning_improves_id"]["effect"] == pytest.approx(m["e2e_ft"]["photo"] - m["zero_shot"]["photo"], abs=1e-3)
    assert set(c["wise_repairs_brittle_fine_tunes"]["parts"]) == set(rec["sweep"])


def test_lesson_06_with_other_number_of_ingredients(tmp_path):
    params = {"n_ingredients": 4, "grid_size": 3, "n_large": 2, "seeds": 2, "plane_per_class": 5, "curve_per_class": 10,
              "interactive": False}
    course.run_lesson("06_soups_and_landscapes", course.resolve_params("06_soups_and_landscapes", None, params),
                      tmp_path, progress=False)
    rec = results.read("06_soups_and_landscapes")
    m, c = rec["metrics"], rec["claims"]
    assert rec["params"]["n_ingredients"] == 4 and rec["params"]["seeds"] == 2 and len(rec["learned_soup_weights"]) == 4
    assert sum(rec["learned_soup_weights"]) == pytest.approx(1.0, abs=1e-3)
    assert set(rec["greedy_kept"]) == {"0", "1"} and all(1 <= len(k) <= 4 for k in rec["greedy_kept"].values())
    for method in ("best_individual", "uniform_soup", "greedy_soup", "learned_soup", "learned_soup_by_layer",
                   "ensemble", "greedy_ensemble"):
        assert set(m[method]) == {"photo", "sketch", "painting", "pixel", "ood"}
    assert set(m["ema"]) == set(m["swa"]) == {"photo"}
    _verdicts_follow_effects(c)
    for soup in ("greedy_soup", "uniform_soup"):  # over the 2 sweeps, on photo test
        claim = c[f"{soup}_beats_best_individual_test"]
        assert claim["seeds"] == 2
        assert claim["effect"] == pytest.approx(m[soup]["photo"] - m["best_individual"]["photo"], abs=1e-3)
    assert "some_learning_rate_pair_soup_beats_its_range" in c
    assert (results.figures_dir() / "06_soups_and_landscapes_lr_grid.png").exists()
    sp = rec["shared_prefix"]  # Frankle et al.'s experiment: two inits x epochs shared, plus independent runs, per seed
    assert set(sp["mean"]) == {"scratch", "zero_shot", "independent"} and set(sp["mean"]["scratch"]) == {"0", "2", "8"}
    assert len(sp["per_seed"]) == 2 and all(np.isfinite(s[i]["8"]["barrier"]) for s in sp["per_seed"]
                                            for i in ("scratch", "zero_shot"))  # 8 of the 16 epochs shared
    assert rec["swa"]["chosen"] in rec["swa"]["lrs"] and len(rec["lr_grid"]["stable_range"]) == 2
    gaps = [s["independent"]["barrier"] - max(s["scratch"]["0"]["barrier"], s["zero_shot"]["0"]["barrier"]) for s in sp["per_seed"]]
    assert c["independent_runs_do_not_average"]["effect"] == pytest.approx(sum(gaps) / 2, abs=1e-3)
    k = rec["appendix_k"]  # 6 pairs x 3 alphas, two beta conventions
    assert {m: len(p) for m, p in k["points"].items()} == {"beta calibrated": 18, "beta = 1": 18}
    assert c["appendix_k_approximation_tracks_measured"]["effect"] == pytest.approx(k["pearson_r"]["beta calibrated"], abs=1e-3)


def test_lesson_03_with_other_task_on_micro_models(tmp_path, micro_pipe):  # fixture: the micro models are built
    import numpy as np

    from fmcls_lib import synthetic
    params = {"backbone": "micro", "generator": "micro", "task": "world/colors", "second_task": "world/shapes",
              "smoke": True, "seeds": 2, "interactive": False}
    # the smoke set's shorter trainings for this lesson (param_sets.json), then the test's own values
    out = course.run_lesson("03_synthetic_data", course.resolve_params("03_synthetic_data", "smoke", params), tmp_path,
                            progress=False)
    rec = results.read("03_synthetic_data")
    m, c = rec["metrics"], rec["claims"]
    assert rec["params"]["task"] == "world/colors"
    for method in ("zero_shot", "b_ce", "b_sce", "le_ce", "le_sce", "le_cf_ce", "le_cf_sce"):
        assert set(m[method]) == {"photo", "sketch", "painting", "pixel", "ood"}
        assert f"world/shapes:{method}" in m
    assert all(cl["verdict"] in results.VERDICTS for cl in c.values()) and rec["params"]["seeds"] == 2
    assert c["le_beats_b"]["seeds"] == 2 and c["sce_beats_ce"]["seeds"] == 6  # pooled: variant x seed rows
    # the pooled SCE-vs-CE effect is the mean photo gain over the three variants; mix vs real the 4-shot gain
    gain = np.mean([m[f"{v}_sce"]["photo"] - m[f"{v}_ce"]["photo"] for v in ("b", "le", "le_cf")])
    assert c["sce_beats_ce"]["effect"] == pytest.approx(gain, abs=2e-4)
    assert c["synthetic_helps_few_shot"]["effect"] == pytest.approx(
        m["few_shot_mix_shots"]["4"] - m["few_shot_real_shots"]["4"], abs=2e-4)
    assert set(c["mix_beats_phase_wise"]["parts"]) == {f"{k}_shot_vs_{o}" for k in (1, 4) for o in ("syn_real", "real_syn")}
    assert set(c["frozen_bn_helps"]["parts"]) == set(rec["frozen_bn"]) == {"real", "synthetic"}
    assert rec["best_zero_shot_variant"] in synthetic.ZERO_SHOT_VARIANTS
    assert 0.0 <= rec["recognition"]["caption_vocabulary"]["probe"] <= 1.0
    r = rec["recognition"]
    assert c["generator_recognised_at_least_70pct"]["n"] == len(r["caption_vocabulary"]["probe_per_class"]) * r["per_class"]
    nb = json.loads(Path(out).read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_lesson_04_with_other_shots_on_micro_models(tmp_path, micro_pipe, micro_dino):  # fixtures: built first
    params = {"backbone": "micro", "ssl": "micro-dino", "generator": "micro", "shots": [2, 4], "k_prime": 1,
              "k_primes": [1, 2], "augment_epochs": 2, "train_epochs": 2, "search_step": [20, 10],
              "inference_steps": 3, "seeds": 2, "interactive": False}
    course.run_lesson("04_cafo", course.resolve_params("04_cafo", None, params), tmp_path, progress=False)
    rec = results.read("04_cafo")
    m, c = rec["metrics"], rec["claims"]
    assert rec["params"]["shots"] == [2, 4]
    assert set(m["cafo_shots"]) == {"2", "4"} and m["cafo"]["photo"] == pytest.approx(m["cafo_shots"]["4"], abs=1e-3)
    assert set(m["cafo"]) == {"photo", "sketch", "painting", "pixel", "ood"}
    assert all(v["verdict"] in ("shown", "refuted", "undecided") and v["test"] for v in c.values())
    assert c["cafo_beats_tip_adapter_f"]["seeds"] == 2 and c["cafo_beats_tip_adapter_f"]["effect"] == pytest.approx(
        m["cafo_shots"]["4"] - m["tip_adapter_f_shots"]["4"], abs=1e-3)
    assert set(c["zs_based_fusion_is_best"]["parts"]) == {"average", "max", "clip_based", "dino_based", "slide"}
    assert set(rec["table5"]) == {"adaptive", "average", "max", "clip_based", "dino_based", "slide"}
    assert set(rec["table6"]) == {"0", "1", "2"} and rec["ablation_shots"] == [2, 4]
    # rows the tables share are one run: the full CaFo of Table 5 is Table 6's K' = k_prime and Figure 5's curve
    assert rec["table5"]["adaptive"] == rec["table6"]["1"] and rec["table5"]["adaptive"]["4"] == m["cafo"]["photo"]
