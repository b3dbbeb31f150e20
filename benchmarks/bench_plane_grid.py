"""Loss-landscape plane: vmapped grid evaluation (torch.func) vs one load_state_dict + update_bn per point,
same numbers, side by side in one run, on the shipped tiny CLIP's classifier and on an ImageNet-size one."""
import time

import numpy as np
import torch

from fmcls_lib import backbones, finetune as ft, heads, landscape, prompts, world


def main(points_per_side=5):
    clip = backbones.load_clip("tiny")
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


def imagenet_size(points_per_side=2, n_images=64, arch="ViT-B-32"):
    """The same comparison on an ImageNet-size classifier (open_clip architecture, random weights, no BatchNorm):
    here building and loading 88 M parameters per point is what the loop pays for."""
    from _random_vit import classifier_and_plane

    clf, pl, size = classifier_and_plane(arch)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n_images, 3, size, size, generator=g), torch.randint(0, 10, (n_images,), generator=g)
    xs = np.linspace(-0.5, 1.5, points_per_side)
    t = time.perf_counter()
    e1, _ = landscape.grid_loop(clf, pl, xs, xs, x, y, None, progress=False)
    loop = time.perf_counter() - t
    t = time.perf_counter()
    e2, _ = landscape.grid_batched(clf, pl, xs, xs, x, y, None, chunk=points_per_side ** 2, progress=False)
    b = time.perf_counter() - t
    print(f"{arch} (random weights), {points_per_side}x{points_per_side} grid, {n_images} images: loop {loop:.1f} s, "
          f"vmap {b:.1f} s, speed-up {loop / b:.2f}x, identical errors: {bool(torch.equal(e1, e2))}")


if __name__ == "__main__":
    main()
    imagenet_size()
