"""The one record each lesson writes (``figures/<lesson>.json``, shape in DESIGN.md), and the tests that decide
every lecture claim in it.

A claim gets one **verdict** at 95 %: ``shown`` (the lecture's direction, significant), ``refuted`` (the opposite
direction, significant) or ``undecided``, with the test, the effect size and the p-value.  The tests come from
``scipy.stats``; this module only chooses which one fits the data:

- :func:`beats` — "method A is more accurate than method B" on the **same** test images.  With one run per
  method it is the exact McNemar test (a two-sided binomial test on the discordant images, as in the
  model-soups paper's Table 4).  With several seeds it is an intersection–union test of two, both of the same
  mean difference: over the test images (a one-sample t-test of the seed-averaged per-image correctness
  difference, ``scipy.stats.ttest_1samp``: test-set sampling) and over the seeds (a paired t-test of the per-seed
  accuracies, ``scipy.stats.ttest_rel``: training randomness).  The claim is shown (or refuted) only if both are
  significant; the reported p is the larger of the two.
- :func:`unpaired` — two accuracies measured on *different* images (photo test vs sketch test): Fisher's exact
  test on the 2×2 table.
- :func:`above` — one accuracy against a fixed rate (chance, a stated target): the exact binomial test.
- :func:`over_seeds` — a quantity measured once per seed (a gain, an inflation, a training time): a one-sample
  t-test of its mean against 0 (its confidence interval from scipy).
- :func:`bootstrap` — any other statistic of per-image correctness (e.g. effective robustness, which needs a
  fitted trend line): the paired percentile bootstrap of ``scipy.stats.bootstrap`` over test images.
- :func:`all_of` / :func:`any_of` — claims about several comparisons at once ("on every shifted domain").
- :func:`identity` — things that must hold exactly (α = 0 is zero-shot); asserted where computed, recorded
  with ``"kind": "identity"``, not voted on.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import atomic_write_bytes
from . import provenance
from .provenance import VERDICTS, record_value as _clean

LEVEL = 0.05  # every verdict is at 95 %


@dataclass(frozen=True)
class Scored:
    """What a study measured: accuracies, the per-image correctness they average (what the paired tests take) and
    anything else it reports (``info``)."""
    accuracy: dict
    correct: dict
    info: dict = field(default_factory=dict)


def figures_dir() -> Path:
    """Where records and figures go: ``$FMCLS_FIGURES`` if set (read at every call: ``fmcls course`` sets it for
    each run), else the course's committed ``figures/``."""
    return Path(os.environ.get("FMCLS_FIGURES") or provenance.FIGURES)



# ----------------------------------------------------------------------------------------------- inputs

def correct(logits, labels) -> np.ndarray:
    """Per-image correctness: bool ``[n]`` from logits ``[n, C]`` (or ``[seeds, n]`` from ``[seeds, n, C]``) and
    labels ``[n]``."""
    x = np.asarray(logits.detach().float().cpu() if hasattr(logits, "detach") else logits)
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    return x.argmax(-1) == y


def _runs(c) -> np.ndarray:
    """``[seeds, n]`` bool from a ``[n]`` vector, a ``[seeds, n]`` array or a list of per-seed vectors."""
    c = np.asarray([np.asarray(v, dtype=bool) for v in c] if isinstance(c, (list, tuple)) else c, dtype=bool)
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"expected per-image correctness of shape [n] or [seeds, n] with n > 0; got {c.shape}")
    return c


def verdict(effect: float, p: float, level: float = LEVEL) -> str:
    """``shown`` if the effect is positive (the lecture's direction) and p < level, ``refuted`` if negative and
    p < level, else ``undecided``."""
    if not np.isfinite(p) or p >= level or effect == 0:
        return "undecided"
    return "shown" if effect > 0 else "refuted"


def _claim(effect, p, test, evidence, **extra) -> dict:
    v = verdict(effect, p)
    return {"verdict": v, "holds": v == "shown", "test": test, "effect": float(effect),
            "p": float(p) if np.isfinite(p) else None, **extra, "evidence": evidence}


# ----------------------------------------------------------------------------------------------- tests

def mcnemar(a, b) -> tuple[float, float, int, int]:
    """Exact McNemar test of two classifiers on the same images: ``(accuracy difference a - b, p, n01, n10)``
    where ``n01`` counts images only ``a`` gets right and ``n10`` those only ``b`` gets right."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"McNemar needs two correctness vectors over the same images; got {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return float(a.mean() - b.mean()), float(p), only_a, only_b


def beats(a, b, what: str = "", level: float = LEVEL) -> dict:
    """The claim "A is more accurate than B" from per-image correctness on the same test images.

    ``a``, ``b``: bool ``[n]`` (one run) or ``[seeds, n]`` (one row per seed; a deterministic method may give a
    single row, which is compared with every seed of the other).  See the module docstring for the test.
    """
    from scipy.stats import ttest_1samp, ttest_rel

    A, B = _runs(a), _runs(b)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"the two methods were scored on different numbers of images ({A.shape[1]} vs "
                         f"{B.shape[1]}); a paired test needs the same test images")
    seeds = max(len(A), len(B))
    if len(A) not in (1, seeds) or len(B) not in (1, seeds):
        raise ValueError(f"seed counts differ: {len(A)} vs {len(B)}")
    A, B = np.broadcast_to(A, (seeds, A.shape[1])), np.broadcast_to(B, (seeds, B.shape[1]))
    acc_a, acc_b = A.mean(1), B.mean(1)
    effect = float(acc_a.mean() - acc_b.mean())
    n = A.shape[1]
    if seeds == 1:
        _, p, n01, n10 = mcnemar(A[0], B[0])
        return _claim(effect, p, "McNemar exact", f"{what}{acc_a[0]:.3f} vs {acc_b[0]:.3f} "
                      f"({n01} images only the first gets right, {n10} only the second; n={n})",
                      n=n, seeds=1)
    d = A.mean(0) - B.mean(0)                                   # per image, averaged over seeds
    p_img = float(ttest_1samp(d, 0.0).pvalue) if np.ptp(d) > 0 else (0.0 if d[0] != 0 else 1.0)
    diff = acc_a - acc_b
    p_seed = float(ttest_rel(acc_a, acc_b).pvalue) if np.ptp(diff) > 0 else (0.0 if diff[0] != 0 else 1.0)
    return _claim(effect, max(p_img, p_seed), "t over images + paired t over seeds",
                  f"{what}{acc_a.mean():.3f} vs {acc_b.mean():.3f}, mean of {seeds} seeds "
                  f"(difference per seed {np.round(diff, 3).tolist()}; p over images {p_img:.2g}, "
                  f"over seeds {p_seed:.2g}; n={n})",
                  n=n, seeds=seeds, p_images=p_img, p_seeds=p_seed)


def unpaired(a, b, what: str = "") -> dict:
    """"A's accuracy is higher than B's" where A and B were scored on different images: Fisher's exact test."""
    from scipy.stats import fisher_exact

    a, b = np.asarray(a, dtype=bool).ravel(), np.asarray(b, dtype=bool).ravel()
    table = [[int(a.sum()), int((~a).sum())], [int(b.sum()), int((~b).sum())]]
    p = float(fisher_exact(table).pvalue)
    return _claim(a.mean() - b.mean(), p, "Fisher exact (unpaired)",
                  f"{what}{a.mean():.3f} (n={a.size}) vs {b.mean():.3f} (n={b.size})", n=[a.size, b.size])


def above(c, rate: float, what: str = "") -> dict:
    """"The accuracy is above ``rate``" (chance, a target) for correctness ``c``: exact binomial test."""
    from scipy.stats import binomtest

    c = np.asarray(c, dtype=bool).ravel()
    p = float(binomtest(int(c.sum()), c.size, rate).pvalue)
    return _claim(c.mean() - rate, p, "binomial exact", f"{what}{c.mean():.3f} vs {rate:.3f} (n={c.size})",
                  n=int(c.size))


def correlation(x, y, what: str = "") -> dict:
    """"``x`` and ``y`` rise together" over paired values (angle and gain per pair of models, approximation and
    measurement): Pearson's r and its p-value (``scipy.stats.pearsonr``); undecided with fewer than three points
    or a constant variable."""
    from scipy.stats import pearsonr

    test = "Pearson r (scipy.stats.pearsonr)"
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return _claim(0.0, 1.0, test, f"{what}too few points", n=len(x))
    r = pearsonr(x, y)
    return _claim(r.statistic, r.pvalue, test, f"{what}r = {r.statistic:+.3f} over {len(x)} points", n=len(x))


def signed_rank(a, b, what: str = "") -> dict:
    """"``a`` exceeds ``b``" over paired values that are not images (one accuracy per pair of models): the mean
    difference and the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``); p = 1 when no pair differs."""
    from scipy.stats import wilcoxon

    d = np.subtract(a, b)
    p = float(wilcoxon(a, b).pvalue) if np.any(d != 0) and len(d) > 1 else 1.0
    return _claim(d.mean(), p, "Wilcoxon signed-rank over pairs (scipy.stats.wilcoxon)",
                  f"{what}{np.mean(a):.3f} vs {np.mean(b):.3f}, mean over {len(d)} pairs "
                  f"({int((d > 0).sum())} above, {int((d < 0).sum())} below)", n=len(d))


def over_seeds(values, what: str = "", unit: str = "") -> dict:
    """"The quantity is positive", measured once per seed (``values``): one-sample t-test, 95 % interval."""
    from scipy.stats import ttest_1samp

    v = np.asarray(values, dtype=float).ravel()
    if v.size < 2 or np.ptp(v) == 0:
        p = 1.0 if v.size < 2 or v[0] == 0 else 0.0
        ci = [float(v.mean())] * 2
    else:
        r = ttest_1samp(v, 0.0)
        p, ci = float(r.pvalue), [float(x) for x in r.confidence_interval(1 - LEVEL)]
    return _claim(v.mean(), p, "one-sample t over seeds" if v.size > 1 else "one run (no test)",
                  f"{what}mean {v.mean():+.3f}{unit} over {v.size} (95 % interval {ci[0]:+.3f} .. {ci[1]:+.3f}; "
                  f"values {np.round(v, 3).tolist()})", ci=ci, seeds=int(v.size))


def bootstrap(statistic, arrays, what: str = "", n_resamples: int = 2000, seed: int = 0, paired: bool = True) -> dict:
    """"``statistic(*arrays) > 0``" for per-image arrays: the percentile interval of ``scipy.stats.bootstrap``;
    significant if the 95 % interval excludes 0.  ``paired``: the arrays are indexed by the same images (resampled
    together); else each is resampled on its own (e.g. test images of different domains).  ``statistic`` must accept
    an ``axis`` keyword (it is called vectorised).  The reported p is the bootstrap's two-sided tail share."""
    from scipy.stats import bootstrap as sp_bootstrap

    arrays = [np.asarray(a, dtype=float) for a in arrays]
    value = float(statistic(*arrays, axis=-1))
    res = sp_bootstrap(arrays, statistic, paired=paired, vectorized=True, n_resamples=n_resamples,
                       confidence_level=1 - LEVEL, method="percentile", rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution
    p = float(min(1.0, 2 * min((dist <= 0).mean(), (dist >= 0).mean())))
    ci = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    return _claim(value, p, "paired bootstrap over images" if paired else "bootstrap over images, each array on its own",
                  f"{what}{value:+.3f} (95 % interval {ci[0]:+.3f} .. {ci[1]:+.3f}, {n_resamples} resamples)",
                  ci=ci, n=int(arrays[0].shape[-1]))


def _combined(parts: dict, verdict_: str, how: str, what: str) -> dict:
    ps = [c["p"] for c in parts.values() if c.get("p") is not None]
    return {"verdict": verdict_, "holds": verdict_ == "shown", "test": f"{how} of: {parts[next(iter(parts))]['test']}",
            "effect": float(min(c["effect"] for c in parts.values())) if how == "all" else
            float(max(c["effect"] for c in parts.values())),
            "p": float(max(ps)) if ps and how == "all" else (float(min(ps)) if ps else None),
            "parts": {k: {kk: c[kk] for kk in ("verdict", "effect", "p")} for k, c in parts.items()},
            "evidence": what + "; ".join(f"{k}: {c['verdict']} ({c['evidence']})" for k, c in parts.items())}


def all_of(parts: dict, what: str = "") -> dict:
    """Every part holds: shown iff every part is shown (intersection–union, no correction needed); refuted iff
    some part is refuted; else undecided.  Effect: the smallest part's effect."""
    vs = [c["verdict"] for c in parts.values()]
    v = "shown" if all(x == "shown" for x in vs) else "refuted" if "refuted" in vs else "undecided"
    return _combined(parts, v, "all", what)


def any_of(parts: dict, what: str = "") -> dict:
    """Some part holds (the parts were fixed before looking at test): shown iff a part is shown at the
    Bonferroni level ``LEVEL / len(parts)``; refuted iff every part is refuted; else undecided."""
    k = len(parts)
    strong = [c for c in parts.values() if c["verdict"] == "shown" and c["p"] is not None and c["p"] < LEVEL / k]
    v = "shown" if strong else "refuted" if all(c["verdict"] == "refuted" for c in parts.values()) else "undecided"
    return _combined(parts, v, "any (Bonferroni)", what)


def identity(description: str) -> dict:
    """A claim that holds exactly by construction; the caller asserts it (``torch.testing.assert_close``)
    before recording it.  Not a vote: ``kind: identity``."""
    return {"kind": "identity", "verdict": "checked", "holds": True, "evidence": description}


def counts(claims: dict) -> dict:
    """How many claims are shown / refuted / undecided, and how many identities were checked."""
    out = {v: 0 for v in (*VERDICTS, "identity")}
    for c in claims.values():
        out["identity" if c.get("kind") == "identity" else c.get("verdict", "undecided")] += 1
    return out


# ----------------------------------------------------------------------------------------------- the record

def write(lesson: str, params: dict, metrics: dict, claims: dict, out_dir=None, timings: dict | None = None,
          **extra) -> Path:
    """Atomically write the lesson record; ``metrics``: method -> domain (or shots) -> accuracy.

    Every claim must carry a verdict (or be an identity).  Measured wall-clock times go in ``timings`` — the
    only part of a record that may differ between two runs of the same code.  The record carries the
    ``fingerprint`` of what produced it (:func:`fmcls_lib.provenance.fingerprint`) and the intra-op thread count.
    """
    import torch

    from . import data

    for k, c in claims.items():
        if c.get("verdict") not in (*VERDICTS, "checked"):
            raise ValueError(f"claim {k!r} has no verdict ({c}); decide it with fm.results.beats / above / ... "
                             "or record it with fm.results.identity")
    path = Path(out_dir or figures_dir()) / f"{lesson}.json"
    record = {"lesson": lesson, "params": params, "fingerprint": provenance.fingerprint(lesson, params),
              "threads": torch.get_num_threads(), "splits": data.split_sizes(), "verdicts": counts(claims),
              "metrics": metrics, "claims": claims, **extra, "timings": timings or {}}
    atomic_write_bytes(path, (json.dumps(_clean(record), indent=1) + "\n").encode())
    return path


def read(lesson: str, out_dir=None) -> dict:
    return json.loads((Path(out_dir or figures_dir()) / f"{lesson}.json").read_text())


def table(claims: dict):
    """The claims as a table for the notebook: verdict, test, effect, p, evidence."""
    import pandas as pd

    return pd.DataFrame({k: {"verdict": c.get("verdict"), "test": c.get("test", "identity"),
                             "effect": c.get("effect"), "p": c.get("p"), "evidence": c["evidence"]}
                         for k, c in claims.items()}).T


SAY = {"shown": "shown", "refuted": "refuted (the opposite holds)", "undecided": "not decided by this test",
       "checked": "checked", "identity": "an identity (asserted)"}


def in_lecture_order(claims: dict, lecture: dict) -> dict:
    """The claims named in ``lecture`` (claim -> the lecture's sentence) in its order, then any others."""
    return {**{k: claims[k] for k in lecture if k in claims}, **{k: c for k, c in claims.items() if k not in lecture}}


def explain(claims: dict, lecture: dict) -> None:
    """Print each claim of ``lecture`` (claim -> the lecture's sentence) that was tested, in the lecture's words:
    its verdict, effect, p-value and test."""
    for name, text in lecture.items():
        if name not in claims:
            continue
        c = claims[name]
        p = "n/a" if c.get("p") is None else f"{c['p']:.2g}"
        effect = "" if c.get("effect") is None else f"effect {c['effect']:+.3f}, "
        print(f"{text}: {SAY.get(c.get('verdict'), c.get('verdict'))} ({effect}p = {p}; {c.get('test', 'identity')}).")
