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
