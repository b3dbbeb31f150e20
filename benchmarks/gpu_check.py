"""GPU check (no network): the real-path code on an ImageNet-size architecture with random weights, timed
on the GPU and on the CPU side by side.  ``benchmarks/gpu_check.sh`` runs it after the smoke course.

Prints images/s of feature extraction, one end-to-end fine-tuning epoch on synthetic tensors, and a G x G
loss-landscape plane grid (per-point loop and vmapped, with the vmapped grid's speed-up over the loop), with the
GPU's speed-up over the CPU for each.
"""
import argparse
import time

import numpy as np
import torch
from _random_vit import classifier_and_plane

from fmcls_lib import finetune, landscape


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def run(device, n_images, grid, arch):
    clf, pl, size = classifier_and_plane(arch, device)
    model = clf.image_encoder
    x = torch.randn(n_images, 3, size, size, device=device)
    with torch.no_grad():
        model(x[:8])
        extract = timed(lambda: [model(x[i:i + 64]) for i in range(0, n_images, 64)], device)
    y = torch.randint(0, 10, (n_images,), device=device)
    r = finetune.Recipe(epochs=1, batch_size=32, warmup_steps=1)
    epoch = timed(lambda: finetune.finetune(clf, r, x, y, x[:64], y[:64], progress=False, device=str(device)), device)
    xs = np.linspace(-0.5, 1.5, grid)
    plane = timed(lambda: landscape.grid_loop(clf, pl, xs, xs, x[:64], y[:64], None, progress=False), device)
    vmapped = timed(lambda: landscape.grid_batched(clf, pl, xs, xs, x[:64], y[:64], None, chunk=8, progress=False),
                    device)
    return {"extract img/s": n_images / extract, "e2e epoch img/s": n_images / epoch,
            f"{grid}x{grid} plane s": plane, f"{grid}x{grid} plane vmapped s": vmapped,
            "plane vmap speed-up": plane / vmapped}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="ViT-B-32")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--cpu-images", type=int, default=64)
    p.add_argument("--grid", type=int, default=21)
    p.add_argument("--cpu-grid", type=int, default=3)
    a = p.parse_args()
    rows = {"cpu": run(torch.device("cpu"), a.cpu_images, a.cpu_grid, a.arch)}
    if torch.cuda.is_available():
        rows["cuda"] = run(torch.device("cuda"), a.images, a.grid, a.arch)
    else:
        print("no CUDA device: CPU numbers only")
    for dev, r in rows.items():
        print(dev, {k: round(v, 2) for k, v in r.items()})
    if "cuda" in rows:
        c, g = rows["cpu"], rows["cuda"]
        per_point = lambda r, n: r[f"{n}x{n} plane s"] / n**2  # noqa: E731
        print("GPU speed-up over CPU:", {"extract": round(g["extract img/s"] / c["extract img/s"], 1),
                                         "e2e epoch": round(g["e2e epoch img/s"] / c["e2e epoch img/s"], 1),
                                         "plane point": round(per_point(c, a.cpu_grid) / per_point(g, a.grid), 1)})


if __name__ == "__main__":
    main()
