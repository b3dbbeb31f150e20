"""One visual style for every figure: seaborn theme, one colour per method across lessons."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
import pandas as pd  # noqa: F401  (lessons build their tables with fm.plots.pd)
import seaborn as sns

from .results import figures_dir

sns.set_theme(style="whitegrid", context="notebook")
_palette = sns.color_palette("tab10", 10) + sns.color_palette("Dark2", 8) + sns.color_palette("Set1", 9) \
    + sns.color_palette("Paired", 12)
METHODS = ("zero_shot", "linear_probe", "clip_adapter", "tip_adapter", "tip_adapter_f", "cafo", "lc_ft",
           "e2e_ft", "uniform_soup", "greedy_soup", "learned_soup", "ensemble", "greedy_ensemble",
           "best_individual", "ema", "swa",
           # synthetic data (lesson 03) and CaFo's ablations (lesson 04)
           "b_ce", "b_sce", "le_ce", "le_sce", "le_cf_ce", "le_cf_sce", "real", "mix", "syn_real", "real_syn",
           "rf", "rg", "dino_cache", "clip_cache")
METHOD_COLORS = dict(zip(METHODS, _palette))
LABELS = {m: m.replace("_", " ").replace("ft", "FT") for m in METHODS}
LABELS.update(zero_shot="zero-shot", linear_probe="linear probe", tip_adapter_f="Tip-Adapter-F",
              tip_adapter="Tip-Adapter", clip_adapter="CLIP-Adapter", cafo="CaFo")
DOMAIN_COLORS = dict(zip(("photo", "sketch", "painting", "pixel", "ood"), sns.color_palette("Set2", 5)))


def color(method: str):
    return METHOD_COLORS.get(method, "0.4")


def save(fig, name: str, out_dir=None, svg: bool = False) -> Path:
    """Save ``fig`` as ``<figures>/<name>.png`` (and ``.svg``) under a stable name."""
    out = Path(out_dir or figures_dir())
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
    if svg:
        fig.savefig(out / f"{name}.svg", bbox_inches="tight")
    return out / f"{name}.png"


def image_grid(images, titles=None, ncols=8, scale=1.1):
    n = len(images)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * scale, nrows * scale * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    return fig


def grouped_bars(table: dict, title: str = "", ylabel: str = "accuracy", chance: float | None = None,
                 err: dict | None = None):
    """``table``: row (e.g. prompt set) -> column (e.g. domain) -> value; one bar group per column.  ``err`` (same
    shape, rows or cells may be missing): error-bar half-widths, e.g. the 95 % interval over seeds."""
    rows = list(table)
    cols = list(dict.fromkeys(c for r in rows for c in table[r]))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(cols) * max(1, len(rows) / 3), 3.4))
    width = 0.8 / len(rows)
    pal = ([color(r) for r in rows] if all(r in METHOD_COLORS for r in rows)
           else sns.color_palette("viridis", len(rows)))
    for i, r in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j, c in enumerate(cols) if c in table[r]]
        ax.bar(xs, [table[r][c] for c in cols if c in table[r]], width, label=LABELS.get(r, r), color=pal[i],
               yerr=None if err is None else [(err.get(r) or {}).get(c, 0.0) for c in cols if c in table[r]],
               capsize=2 if err is not None else 0)
    if chance is not None:
        ax.axhline(chance, color="0.5", ls=":", lw=1, label="chance")
    ax.set_xticks(range(len(cols)), cols)
    ax.set(ylabel=ylabel, title=title, ylim=(0, 1))
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    return fig


def interval(values, level: float = 0.95) -> tuple[float, float]:
    """``(mean, half-width)`` of the t interval of per-seed ``values`` (half-width 0 for a single value)."""
    from scipy.stats import t as student_t
    v = np.asarray(values, dtype=float).ravel()
    if v.size < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(student_t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def pm(values, digits: int = 3) -> str:
    """``"mean ± half-width"`` of the 95 % t interval over seeds, for tables (just the mean for one seed)."""
    m, h = interval(values)
    return f"{m:.{digits}f} ± {h:.{digits}f}" if np.size(values) > 1 else f"{m:.{digits}f}"


def shots_curve(curves: dict, hlines: dict | None = None, title: str = "", domain: str = "photo",
                err: str = "ci95"):
    """``curves``: method -> {k: [accuracy per seed]}; mean over seeds with error bars (``err``: ``"ci95"``, the
    95 % t interval of the mean, or ``"std"``), log-2 shot axis."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for method, curve in curves.items():
        ks = sorted(curve)
        m = [float(np.mean(curve[k])) for k in ks]
        s = [interval(curve[k])[1] if err == "ci95" else float(np.std(curve[k])) for k in ks]
        ax.errorbar(ks, m, yerr=s, marker="o", capsize=3, color=color(method), label=LABELS.get(method, method))
    for method, v in (hlines or {}).items():
        ax.axhline(v, ls="--", color=color(method), label=LABELS.get(method, method))
    ax.set_xscale("log", base=2)
    ax.set(xlabel="shots per class", ylabel=f"{domain} test accuracy", title=title)
    ax.legend(fontsize=8)
    return fig


def robustness_scatter(points: dict, title: str = "", trend=None):
    """``points``: label -> (ID accuracy, OOD accuracy); y = x and an optional fitted ``trend``."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    lo = min(min(p) for p in points.values()) - 0.05
    ax.plot([lo, 1], [lo, 1], color="0.6", ls=":", lw=1, label="y = x (no drop)")
    if trend is not None:
        xs = np.linspace(lo, 1, 20)
        ax.plot(xs, trend[0] * xs + trend[1], color="0.3", lw=1, label="trend of probes")
    for label, (x, y) in points.items():
        method = label.split(" ")[0]
        ax.scatter(x, y, s=40, color=color(method), edgecolor="k", zorder=3)
        ax.annotate(label.replace("_", " "), (x, y), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set(xlabel="ID (photo) accuracy", ylabel="OOD accuracy (mean over shifts)", title=title,
           xlim=(lo, 1), ylim=(lo, 1))
    ax.legend(fontsize=7, loc="upper left")
    return fig


def heatmap(grid, ys, xs, point=None, xlabel="alpha", ylabel="beta", title="", ax=None):
    """``grid[i, j]`` at (``xs[j]``, ``ys[i]``); ``point`` = (x, y) marked with a star."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 3.8))
    im = ax.imshow(np.asarray(grid), origin="lower", aspect="auto", cmap="viridis",
                   extent=(float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])))
    ax.figure.colorbar(im, ax=ax, label="accuracy")
    if point is not None:
        ax.plot(*point, marker="*", ms=14, color="red", mec="white")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return ax.figure


def wise_plane(curves: dict, marker_alpha=None, ax=None, title="", xlabel="ID (photo) accuracy",
               ylabel="OOD accuracy (mean over shifts)"):
    """WiSE-FT's Figure 1: ``curves``: label -> {alpha: (ID, OOD)}; zero-shot (alpha 0) as a star,
    fine-tuned (alpha 1) as a square, ``marker_alpha`` circled on every curve."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.2))
    used = set()
    for i, (label, pts) in enumerate(curves.items()):
        a = sorted(pts)
        xs, ys = [pts[k][0] for k in a], [pts[k][1] for k in a]
        method = label.split(" ")[0]
        c = color(method) if method in METHOD_COLORS and method not in used else sns.color_palette("Dark2", 8)[i % 8]
        used.add(method)
        ax.plot(xs, ys, "-", color=c, lw=1.6, label=f"WiSE-FT {label}")
        ax.scatter(xs, ys, s=10, color=c)
        ax.scatter(*pts[a[-1]], marker="s", s=60, color=c, edgecolor="k", zorder=3)
        if marker_alpha is not None:
            near = min(a, key=lambda k: abs(k - marker_alpha))
            ax.scatter(*pts[near], s=150, facecolor="none", edgecolor="red", lw=2, zorder=4)
    first = next(iter(curves.values()))
    ax.scatter(*first[min(first)], marker="*", s=220, color=color("zero_shot"), edgecolor="k", zorder=5,
               label="zero-shot (alpha = 0)")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return ax.figure


def alpha_lines(accs: dict, domains, ax=None, title="", marker_alpha=None, err: dict | None = None):
    """Accuracy against alpha: ``accs``: alpha -> {domain: accuracy}; ``err`` (same shape): a band of
    +- that half-width (e.g. the 95 % interval over seeds)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.6))
    a = sorted(accs)
    for d in domains:
        ax.plot(a, [accs[k][d] for k in a], marker=".", color=DOMAIN_COLORS.get(d), label=d,
                lw=2.5 if d in ("photo", "ood") else 1.2)
        if err is not None:
            ax.fill_between(a, [accs[k][d] - err[k][d] for k in a], [accs[k][d] + err[k][d] for k in a],
                            color=DOMAIN_COLORS.get(d), alpha=0.15, lw=0)
    if marker_alpha is not None:
        ax.axvline(marker_alpha, color="red", lw=1, ls="--")
    ax.set(xlabel="alpha (0 = zero-shot, 1 = fine-tuned)", ylabel="test accuracy", title=title)
    ax.legend(fontsize=7, ncol=2)
    return ax.figure


def plane_contours(grid, title="", ax=None, levels=15):
    """Error on a plane of weight space (Garipov et al.): filled contours, models marked and labelled.
    ``grid``: a :class:`fmcls_lib.landscape.PlaneGrid`; ``levels``: a count, or explicit contour levels (to share
    one colour scale between panels)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.4, 4.4))
    cs = ax.contourf(np.asarray(grid.xs), np.asarray(grid.ys), np.asarray(grid.error), levels=levels,
                     cmap="viridis_r")
    ax.figure.colorbar(cs, ax=ax, label="error")
    for i, (label, (x, y)) in enumerate(grid.points.items()):
        ax.scatter(x, y, s=70, marker="*^os"[i % 4] if i < 4 else "D", color="white", edgecolor="k", zorder=3)
        ax.annotate(label, (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8, color="white",
                    bbox={"boxstyle": "round", "fc": "0.2", "alpha": 0.6, "lw": 0})
    ax.set(xlabel="u (along theta_1 - theta_0)", ylabel="v", title=title)
    return ax.figure


def shared_prefix(studies: dict, independent: dict | None = None,
                  title: str = "averaging two runs that share their first k epochs", err: dict | None = None,
                  ylabel: str = "held-out accuracy"):
    """Frankle et al.'s plot: accuracy of the weight average vs the mean of the two endpoints,
    against the epochs shared, one colour per initialisation (``{init: {k: {"average", "parent", "child"}}}``);
    ``independent`` (same keys) marks the average of two runs from different random initialisations.
    ``err`` (``{init: {k: half-width}}``, and ``"independent"``): error bars on the averages."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    err = err or {}
    if independent is not None:
        ax.errorbar([0], [independent["average"]], yerr=err.get("independent"), marker="*", ms=13, color="k",
                    zorder=3, capsize=3, ls="none", label="scratch, different random inits: weight average")
    for (init, res), c in zip(studies.items(), sns.color_palette("Set1", len(studies))):
        ks = sorted(res)
        ax.errorbar(ks, [res[k]["average"] for k in ks], yerr=[err[init][k] for k in ks] if init in err else None,
                    marker="o", color=c, capsize=3, label=f"{init}: weight average")
        ax.plot(ks, [(res[k]["parent"] + res[k]["child"]) / 2 for k in ks], ls=":", color=c,
                label=f"{init}: mean of the two runs")
    ax.set(xlabel="epochs shared before the runs split (k)", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return fig


def approximation_scatter(panels: dict, title: str = "soup - ensemble loss: approximation vs measured"):
    """One scatter per panel (``{name: [{"approx", "measured"}, ...]}``) with the identity line."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4), squeeze=False)
    for ax, (name, pts) in zip(axes.flat, panels.items()):
        a, m = np.array([p["approx"] for p in pts]), np.array([p["measured"] for p in pts])
        ax.scatter(a, m, s=18, color=color("ensemble"))
        lo, hi = min(a.min(), m.min()), max(a.max(), m.max())
        ax.plot([lo, hi], [lo, hi], ls=":", color="0.5")
        ax.set(xlabel="approximation", ylabel="measured", title=name)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def hyperparameter_arrows(sweep: dict, zero_shot: dict, ood: str = "ood", ax=None,
                          title="fine-tuned (square) -> WiSE-FT alpha=0.5 (circle)"):
    """WiSE-FT's "Comparison with Individual Fine-tuned Models": per fine-tune of ``sweep`` (name -> {alpha:
    {domain: accuracy}} at alpha 1 and 0.5) an arrow from the fine-tuned model (square) to its WiSE-FT at
    alpha = 0.5 (circle) in the (photo, ``ood``) plane; ``zero_shot`` ({domain: accuracy}) as a star.
    ``ood="photo"`` (a task without a shift domain) puts photo on both axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (name, r) in enumerate(sweep.items()):
        c = sns.color_palette("Dark2", 8)[i % 8]
        ax.annotate("", xy=(r[0.5]["photo"], r[0.5][ood]), xytext=(r[1.0]["photo"], r[1.0][ood]),
                    arrowprops={"arrowstyle": "->", "color": c})
        ax.scatter(r[1.0]["photo"], r[1.0][ood], marker="s", color=c, label=name)
        ax.scatter(r[0.5]["photo"], r[0.5][ood], marker="o", color=c)
    ax.scatter(zero_shot["photo"], zero_shot[ood], marker="*", s=200, color=color("zero_shot"), label="zero-shot")
    ax.set(xlabel="ID (photo test)", ylabel="OOD (mean of shifts)" if ood != "photo" else "photo test (no shift domain)",
           title=title)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax.figure


def alpha_paths(paths: dict, alphas, ax=None, ylabel="photo validation accuracy", title=""):
    """Accuracy along alpha for several fine-tunes, each repeated over seeds: ``paths``: name -> (colour,
    [per seed: {alpha: accuracy}]); the line is the mean over seeds, the band its 95 % interval."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.2))
    for name, (c, vs) in paths.items():
        mean, half = zip(*[interval([v[al] for v in vs]) for al in alphas])
        ax.plot(alphas, mean, marker=".", color=c, label=name)
        ax.fill_between(alphas, np.subtract(mean, half), np.add(mean, half), color=c, alpha=0.15, lw=0)
    ax.set(xlabel="alpha (0 = zero-shot, 1 = fine-tuned)", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return ax.figure
