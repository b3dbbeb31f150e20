"""Same-architecture stand-ins for the real path, for tests and for the GPU check (no machine here can download).

``make(root)`` writes, once, random-weight models of the real architectures into a Hugging Face hub cache and small
random datasets in torchvision's on-disk layouts, and returns the environment that points the loaders at them::

    env = standins.make("/tmp/standins")   # {"HF_HUB_CACHE": ..., "FMCLS_DATA": ..., ...}
    # then run a lesson with LESSON_PARAMS as its parameters, in that environment

The lessons reach them through their real names (``stabilityai/sd-turbo``, ``vit_small_patch16_224.dino``,
``cifar10`` with its ``stl10`` shift); only the CLIP is a smaller ViT (``hf-hub:`` + :data:`models.TINY_VIT_CLIP`) so
that a CPU runs the lessons in minutes — the exact ``ViT-B-32/openai`` file is written too, for loading tests.
"""
from __future__ import annotations

from pathlib import Path

from . import models

LESSON_PARAMS = {"backbone": f"hf-hub:{models.TINY_VIT_CLIP}", "task": "cifar10",
                 "generator": "stabilityai/sd-turbo", "ssl": "vit_small_patch16_224.dino"}


def make(root, vit_b_32: bool = False) -> dict:
    """Write every stand-in under ``root`` (skipping what is there) and return the environment variables that make
    the real loaders find them, offline.  ``vit_b_32``: also the full-size random ``ViT-B-32/openai`` (300 MB)."""
    from . import datasets

    root = Path(root)
    hub, data = root / "hub", root / "datasets"
    models.write_tiny_vit_clip(hub)
    models.write_timm_dino(hub)
    models.write_sd_turbo(hub)
    if vit_b_32:
        models.write_vit_b_32_openai(hub)
    datasets.write_cifar10(data)
    datasets.write_stl10(data)
    datasets.write_eurosat(data, per_class=40)  # a task without a shift domain, and without an official split
    return {"HF_HUB_CACHE": str(hub), "FMCLS_DATA": str(data), "FMCLS_DATASET_CHECKSUMS": "off",
            "HF_HUB_OFFLINE": "1"}
