"""The verdict tests of ``fmcls_lib.results`` against independent computations (exact sums, textbook formulas)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from fmcls_lib import results


def _binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p at 1/2, by summing the pmf over outcomes no more likely than k."""
    pmf = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    return min(1.0, sum(p for p in pmf if p <= pmf[k] * (1 + 1e-12)))


def test_mcnemar_is_the_exact_binomial_test_on_discordant_images():
    a = np.array([1] * 30 + [0] * 5 + [1] * 40 + [0] * 25, dtype=bool)
    b = np.array([0] * 30 + [1] * 5 + [1] * 40 + [0] * 25, dtype=bool)
    diff, p, n01, n10 = results.mcnemar(a, b)
    assert (n01, n10) == (30, 5)
    assert diff == pytest.approx(0.25)
    assert p == pytest.approx(_binom_two_sided(30, 35), rel=1e-9)
    c = results.beats(a, b, "x: ")
    assert c["verdict"] == "shown" and c["test"] == "McNemar exact" and c["n"] == 100
    assert results.beats(b, a)["verdict"] == "refuted"
    # concordant images carry no information: adding them changes nothing but the effect
    assert results.mcnemar(np.r_[a, [True] * 1000], np.r_[b, [True] * 1000])[1] == pytest.approx(p)


def test_identical_classifiers_are_undecided():
    a = np.random.default_rng(0).random(500) < 0.7
    c = results.beats(a, a)
    assert c["verdict"] == "undecided" and c["effect"] == 0 and c["p"] == 1.0


def test_over_seeds_uses_images_and_seeds_and_reports_the_larger_p():
    rng = np.random.default_rng(1)
    A = rng.random((3, 2000)) < 0.8
    B = rng.random((3, 2000)) < 0.7
    c = results.beats(A, B)
    acc_a, acc_b = A.mean(1), B.mean(1)
    d = acc_a - acc_b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    from scipy.stats import t as student
    assert c["p_seeds"] == pytest.approx(2 * student.sf(abs(t), 2), rel=1e-6)
    di = A.mean(0) - B.mean(0)
    ti = di.mean() / (di.std(ddof=1) / math.sqrt(di.size))
    assert c["p_images"] == pytest.approx(2 * student.sf(abs(ti), di.size - 1), rel=1e-6)
    assert c["p"] == max(c["p_images"], c["p_seeds"]) and c["seeds"] == 3
    assert c["effect"] == pytest.approx(d.mean())


def test_a_deterministic_method_is_compared_with_every_seed_and_sizes_must_match():
    rng = np.random.default_rng(2)
    A, b = rng.random((3, 800)) < 0.9, rng.random(800) < 0.5
    assert results.beats(A, b)["verdict"] == "shown"
    with pytest.raises(ValueError, match="same test images"):
        results.beats(A, b[:-1])
    with pytest.raises(ValueError, match="seed counts"):
        results.beats(A, A[:2])


def test_correct_from_logits():
    logits = torch.tensor([[0.1, 2.0], [3.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(results.correct(logits, torch.tensor([1, 1, 1])), [True, False, True])
    stacked = torch.stack([logits, -logits])
    assert results.correct(stacked, torch.tensor([1, 1, 1])).shape == (2, 3)


def test_unpaired_above_and_over_seeds_against_scipy_free_formulas():
    a = np.array([1] * 90 + [0] * 10, dtype=bool)
    b = np.array([1] * 60 + [0] * 40, dtype=bool)
    assert results.unpaired(a, b)["verdict"] == "shown"
    assert results.unpaired(b, a)["verdict"] == "refuted"
    # binomial test of 9/10 against 0.5: p = 2 * P(X >= 9)
    c = results.above(np.array([1] * 9 + [0], dtype=bool), 0.5)
    assert c["p"] == pytest.approx(2 * (10 + 1) / 1024)
    v = np.array([0.02, 0.03, 0.025, 0.035])
    o = results.over_seeds(v)
    from scipy.stats import t as student
    half = student.ppf(0.975, 3) * v.std(ddof=1) / 2
    assert o["ci"] == pytest.approx([v.mean() - half, v.mean() + half])
    assert o["verdict"] == "shown"
    assert results.over_seeds([0.01])["verdict"] == "undecided"  # one value is no test


def test_bootstrap_interval_covers_the_statistic_and_decides_by_it():
    rng = np.random.default_rng(3)
    a, b = rng.random(3000) < 0.75, rng.random(3000) < 0.65
    stat = lambda x, y, axis: x.mean(axis) - y.mean(axis)  # noqa: E731
    c = results.bootstrap(stat, [a, b], n_resamples=400)
    assert c["ci"][0] < c["effect"] < c["ci"][1] and c["verdict"] == "shown"
    assert results.bootstrap(stat, [a, a], n_resamples=100)["verdict"] == "undecided"


def test_combinations_and_identities():
    shown = {"verdict": "shown", "effect": 0.1, "p": 0.001, "evidence": "", "test": "t"}
    und = {"verdict": "undecided", "effect": 0.01, "p": 0.3, "evidence": "", "test": "t"}
    ref = {"verdict": "refuted", "effect": -0.1, "p": 0.001, "evidence": "", "test": "t"}
    assert results.all_of({"a": shown, "b": shown})["verdict"] == "shown"
    assert results.all_of({"a": shown, "b": und})["verdict"] == "undecided"
    assert results.all_of({"a": shown, "b": ref})["verdict"] == "refuted"
    assert results.any_of({"a": shown, "b": und})["verdict"] == "shown"
    weak = {**shown, "p": 0.04}
    assert results.any_of({"a": weak, "b": und})["verdict"] == "undecided"  # 0.04 > 0.05 / 2
    assert results.any_of({"a": ref, "b": ref})["verdict"] == "refuted"
    claims = {"x": shown, "y": und, "z": results.identity("alpha = 0 is zero-shot")}
    assert results.counts(claims) == {"shown": 1, "refuted": 0, "undecided": 1, "identity": 1}


def test_write_refuses_claims_without_verdict_and_keeps_timings_apart(tmp_path):
    with pytest.raises(ValueError, match="no verdict"):
        results.write("01_clip_zero_shot", {}, {}, {"c": {"holds": True, "evidence": "by eye"}}, out_dir=tmp_path)
    p = results.write("01_clip_zero_shot", {"task": "world/shapes"}, {"m": {"photo": 0.5}},
                      {"c": results.above(np.ones(10, bool), 0.5)}, out_dir=tmp_path, timings={"fit": 1.23})
    rec = results.read("01_clip_zero_shot", tmp_path)
    assert p.exists() and rec["timings"] == {"fit": 1.23} and rec["verdicts"]["shown"] == 1
    assert len(rec["fingerprint"]) == 16 and rec["threads"] >= 1 and rec["splits"] in ("full", "smoke")


def test_correlation_is_pearsons_r_and_undecided_on_too_few_or_constant_points():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = 0.8 * x + rng.normal(scale=0.5, size=30)
    c = results.correlation(x, y, "toy: ")
    r = np.corrcoef(x, y)[0, 1]   # independent of scipy: Pearson's r from numpy
    t = r * np.sqrt(28 / (1 - r ** 2))
    assert c["effect"] == pytest.approx(r) and c["verdict"] == "shown" and c["n"] == 30
    assert c["p"] == pytest.approx(2 * stats.t.sf(abs(t), 28), rel=1e-6)
    assert results.correlation(x, -y)["verdict"] == "refuted"
    for few in ((x[:2], y[:2]), (np.ones(5), y[:5])):
        assert results.correlation(*few)["verdict"] == "undecided"


def test_signed_rank_is_wilcoxon_over_pairs():
    a = np.array([0.81, 0.79, 0.84, 0.80, 0.83, 0.82, 0.85, 0.78])
    b = a - np.array([0.01, 0.02, 0.015, 0.005, 0.03, 0.025, 0.012, 0.018])
    c = results.signed_rank(a, b)
    assert c["effect"] == pytest.approx(np.mean(a - b)) and c["n"] == 8 and c["verdict"] == "shown"
    assert c["p"] == pytest.approx(2 / 2 ** 8)   # all 8 differences positive: exact two-sided p = 2 / 2^8
    assert "8 above, 0 below" in c["evidence"]
    assert results.signed_rank(a, a)["verdict"] == "undecided" and results.signed_rank(a, a)["p"] == 1.0
