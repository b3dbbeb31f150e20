"""Image and text features, L2-normalised, extracted in batches once and cached on disk.

The cache key is (backbone id incl. weights hash, dataset, split, domain, size, transform), so a
different model, world version or preprocessing can never be served stale features.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from . import cache


def feature_key(backbone, dataset) -> dict:
    return {"backbone": backbone.id, "transform": backbone.transform_id, **dataset.key}


def image_features(backbone, dataset, batch_size: int = 512, progress: bool = True) -> torch.Tensor:
    """``[N, D]`` float32 L2-normalised image features of ``dataset`` (cached)."""

    def compute():
        imgs = dataset.images
        out = [backbone.encode_images(imgs[i:i + batch_size])
               for i in tqdm(range(0, len(dataset), batch_size), disable=not progress,
                             desc=f"features {dataset.name}/{dataset.split}/{dataset.domain}")]
        return torch.cat(out)

    return cache.get_or_compute("features", feature_key(backbone, dataset), compute)


def load_splits(backbone, task: str, domains, splits=("train", "val", "test"), progress=True):
    """``{(split, domain): (feats, labels)}`` for every split x domain, from the cache when possible."""
    from . import data

    out = {}
    for d in domains:
        for s in splits:
            ds = data.load(task, split=s, domain=d)
            out[s, d] = (image_features(backbone, ds, progress=progress), torch.as_tensor(ds.labels))
    return out


AUGMENT = "random-resized-crop(0.5,1)+hflip"  # the official Tip-Adapter / CLIP-Adapter train transform


def augment(images, size: int, generator: torch.Generator, scale=(0.5, 1.0)):
    """One random view per image: random resized crop (``scale``) to ``size`` + horizontal flip.

    ``images``: uint8 ``[N, H, W, 3]`` arrays, a ``[N, C, H, W]`` tensor, or a list of PIL images; the
    result has the same kind.  The draw is seeded from ``generator`` (global RNG untouched).
    """
    from torchvision.transforms import v2

    t = v2.Compose([v2.RandomResizedCrop(size, scale=scale, antialias=True), v2.RandomHorizontalFlip()])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        if isinstance(images, list):  # PIL images (real datasets)
            return [t(im) for im in images]
        if isinstance(images, torch.Tensor):
            return torch.stack([t(im) for im in images])
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        return torch.stack([t(im) for im in x]).permute(0, 2, 3, 1).numpy()


def augmented_features(backbone, dataset, epochs: int = 10, seed: int = 0, batch_size: int = 512,
                       progress: bool = True) -> torch.Tensor:
    """``[epochs, N, D]`` normalised features of ``epochs`` augmented passes over ``dataset`` (cached).

    Tip-Adapter's cache keys average these passes; Tip-Adapter-F and CLIP-Adapter train on one
    pass per epoch, as the official code does with its augmenting train loader.
    """
    key = {**feature_key(backbone, dataset), "augment": AUGMENT, "epochs": epochs, "seed": seed}

    def compute():
        g = torch.Generator().manual_seed(seed)
        imgs, out = dataset.images, []
        size = imgs.shape[1] if not isinstance(imgs, list) else backbone.image_size
        for _ in tqdm(range(epochs), disable=not progress, desc=f"augmented passes {dataset.name}"):
            out.append(torch.cat([backbone.encode_images(augment(imgs[i:i + batch_size], size, g))
                                  for i in range(0, len(dataset), batch_size)]))
        return torch.stack(out)

    return cache.get_or_compute("augmented_features", key, compute)
