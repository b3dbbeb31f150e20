"""Loss-landscape plane: vmapped grid evaluation (torch.func) vs one load_state_dict + update_bn per point,
same numbers, side by side in one run, on the shipped tiny CLIP's classifier."""
import time

import numpy as np
import torch

from fmcls_lib import backbones, finetune as ft, heads, landscape, prompts, world


def main(points_per_side=5):
    clip = backbones.load_clip("tiny", progress=False)
    W = heads.zero_shot_head(clip, world.SHAPES, prompts.PHOTO)
    model = ft.from_zero_shot(clip, W)
    t0 = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    t1, t2 = ({k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in t0.items()}
              for _ in range(2))
    pl = landscape.plane(t0, t1, t2, [k for k, _ in model.named_parameters()])
    x = torch.randn(300, 3, 32, 32, generator=g)
    y = torch.randint(0, 12, (300,), generator=g)
    x_bn = torch.randn(256, 3, 32, 32, generator=g)
    xs = ys = np.linspace(-1, 1, points_per_side)
    t = time.perf_counter()
    e1, _ = landscape.grid_loop(model, pl, xs, ys, x, y, x_bn, progress=False)
    loop = time.perf_counter() - t
    for chunk in (1, 5, 25):
        t = time.perf_counter()
        e2, _ = landscape.grid_batched(model, pl, xs, ys, x, y, x_bn, chunk=chunk, progress=False)
        b = time.perf_counter() - t
        print(f"{points_per_side}x{points_per_side} grid: loop {loop:.2f} s, vmap (chunk {chunk:2d}) {b:.2f} s, "
              f"speed-up {loop / b:.2f}x, identical errors: {bool(torch.equal(e1, e2))}")


if __name__ == "__main__":
    main()
