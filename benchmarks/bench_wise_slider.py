"""WiSE-FT alpha slider: callback latency (p95, ms) for LC (exact output-space ensemble of cached logits)
and for E2E (lookup in the per-alpha logits evaluated once), plus the matplotlib redraw, side by side."""
import time

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fmcls_lib import finetune as ft, plots  # noqa: E402


def p95(fn, n=200):
    t = []
    for i in range(n):
        s = time.perf_counter()
        fn(i)
        t.append(time.perf_counter() - s)
    return np.percentile(t, 95) * 1e3, np.median(t) * 1e3


def main(n=600, classes=12):
    g = torch.Generator().manual_seed(0)
    domains = ("photo", "sketch", "painting", "pixel")
    Y = {d: torch.randint(0, classes, (n,), generator=g) for d in domains}
    lc0 = {d: torch.randn(n, classes, generator=g) for d in domains}
    lc1 = {d: torch.randn(n, classes, generator=g) for d in domains}
    alphas = np.round(np.arange(0, 1.0001, 0.05), 4)
    grid = {float(a): {d: torch.randn(n, classes, generator=g) for d in domains} for a in alphas}

    def lc(i):
        a = (i % 100) / 100
        return ft.accuracies({d: (1 - a) * lc0[d] + a * lc1[d] for d in domains}, Y)

    def e2e(i):
        a = min(grid, key=lambda k: abs(k - (i % 100) / 100))
        return ft.accuracies(grid[a], Y)

    acc = {float(a): ft.accuracies(grid[a], Y) for a in alphas}
    pts = {"e2e_ft": {a: (r["photo"], r["ood"]) for a, r in acc.items()}}

    def redraw(i):
        fig = plots.wise_plane(pts, marker_alpha=(i % 100) / 100)
        fig.canvas.draw()
        plots.plt.close(fig)

    for name, fn, reps in (("LC, exact from cached logits", lc, 200), ("E2E, from the alpha grid", e2e, 200),
                           ("figure redraw (matplotlib Agg)", redraw, 20)):
        hi, med = p95(fn, reps)
        print(f"{name:32s}: p95 {hi:7.2f} ms, median {med:7.2f} ms")


if __name__ == "__main__":
    main()
