"""Tip-Adapter alpha/beta search: one batched tensor operation vs the official nested loop, and the
slider callback (logits + accuracy + per-class accuracy from cached tensors), side by side in one run."""
import time

import torch

from fmcls_lib import tip_adapter as ta


def main(n_val=600, classes=12, shots=16, dim=128, repeats=3):
    g = torch.Generator().manual_seed(0)
    norm = torch.nn.functional.normalize
    f = norm(torch.randn(n_val, dim, generator=g), dim=-1)
    y = torch.randint(0, classes, (n_val,), generator=g)
    views = norm(torch.randn(10, shots * classes, dim, generator=g), dim=-1)
    W = norm(torch.randn(classes, dim, generator=g), dim=-1)
    cache = ta.build_cache(views, torch.arange(shots * classes) % classes, classes)
    betas, alphas = ta.official_grid()
    loop, batched = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ref = ta.search_loop(f, y, cache, W, betas, alphas, scale=25.0)
        loop.append(time.perf_counter() - t)
        t = time.perf_counter()
        s = ta.search(f, y, cache, W, betas, alphas, scale=25.0)
        batched.append(time.perf_counter() - t)
    assert (s.alpha, s.beta) == (ref[0], ref[1]), "batched and nested-loop optima differ"
    print(f"grid {len(betas)}x{len(alphas)}, val {n_val}, cache {shots}x{classes}: nested loop {min(loop):.3f} s, "
          f"batched {min(batched) * 1e3:.1f} ms, speed-up {min(loop) / min(batched):.0f}x (same optimum)")

    base, E, L = 25.0 * f @ W.T, 1 - f @ cache.keys.T, cache.values
    lat = []
    for i in range(200):
        a, b = float(alphas[i % 20]), float(betas[i % 200])
        t = time.perf_counter()
        pred = (base + a * torch.exp(-b * E) @ L).argmax(1)
        _ = float((pred == y).float().mean()), [float((pred[y == c] == c).float().mean()) for c in range(classes)]
        lat.append(time.perf_counter() - t)
    lat = sorted(lat)
    print(f"slider callback (compute): median {lat[100] * 1e3:.2f} ms, p95 {lat[189] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
