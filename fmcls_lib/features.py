"""Image and text features, L2-normalised, extracted in batches once and cached on disk.

The cache key is (backbone id incl. weights hash, dataset, split, domain, size, transform), so a
different model, world version or preprocessing can never be served stale features.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from tqdm.auto import tqdm

from . import cache


def feature_key(backbone, dataset) -> dict:
    return {"backbone": backbone.id, "transform": backbone.transform_id, **dataset.key}


def image_features(backbone, dataset, batch_size: int = 512, progress: bool = True) -> torch.Tensor:
    """``[N, D]`` float32 L2-normalised image features of ``dataset`` (cached).  Real datasets stream through a
    ``DataLoader`` (one decoded image at a time, ``backbone.preprocess``); the world's arrays go in batches."""

    def compute():
        desc = f"features {dataset.name}/{dataset.split}/{dataset.domain}"
        if dataset.streamed:
            return _encode_stream(backbone, Preprocessed(dataset.images, backbone.preprocess), batch_size,
                                  progress, desc)
        imgs = dataset.images
        out = [backbone.encode_images(imgs[i:i + batch_size])
               for i in tqdm(range(0, len(dataset), batch_size), disable=not progress, desc=desc)]
        return torch.cat(out)

    return cache.get_or_compute("features", feature_key(backbone, dataset), compute)


class Preprocessed(torch.utils.data.Dataset):
    """Map-style dataset over ``images`` (a :class:`fmcls_lib.data.RealImages`): image ``i`` decoded and
    transformed on access.  ``augment``: ``(transform, seeds)`` applied first, its draw seeded by (seeds, i) so
    that the views do not depend on the number of loader workers."""

    def __init__(self, images, transform, augment=None):
        self.images, self.transform, self.augment = images, transform, augment

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        im = self.images[i]
        if self.augment is not None:
            t, seeds = self.augment
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(np.random.SeedSequence([*seeds, i]).generate_state(1)[0]))
                im = t(im)
        return self.transform(im)


LOADER_WORKERS_FROM = 2048  # images; smaller sets decode in the main process (starting workers costs more)
STREAM_BATCH = 128  # images per streamed batch at most: a 224-px float batch is 77 MB, and workers keep 2 each in flight


def loader_workers(n_images: int) -> int:
    """DataLoader worker processes for decoding ``n_images``: none below :data:`LOADER_WORKERS_FROM` images or on a
    2-core machine (a worker only competes with the model for the cores there), else all but one core, up to 8;
    ``$FMCLS_WORKERS`` sets the number for large sets."""
    if n_images < LOADER_WORKERS_FROM:
        return 0
    if "FMCLS_WORKERS" in os.environ:
        return int(os.environ["FMCLS_WORKERS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(8, cores - 1)


def stream_loader(ds: torch.utils.data.Dataset, batch_size: int = STREAM_BATCH, batch_sampler=None):
    """The one DataLoader of decoded images: batches of at most :data:`STREAM_BATCH` (or ``batch_sampler``'s index
    lists), :func:`loader_workers` workers, pinned memory on CUDA."""
    kw = {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": min(batch_size, STREAM_BATCH)}
    return torch.utils.data.DataLoader(ds, num_workers=loader_workers(len(ds)), pin_memory=torch.cuda.is_available(),
                                       **kw)


def _encode_stream(backbone, ds, batch_size, progress, desc) -> torch.Tensor:
    """Features of a :class:`Preprocessed` dataset, batch by batch: memory is one batch, not the split."""
    if ds.transform is None:
        raise ValueError(f"backbone {backbone.id} has no preprocess transform for the images of a real dataset")
    return torch.cat([backbone.encode_prepared(x) for x in tqdm(stream_loader(ds, batch_size), disable=not progress,
                                                                  desc=desc)])


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
        if dataset.streamed:  # real datasets: one augmented view per image and pass, streamed
            from torchvision.transforms import v2
            t = v2.Compose([v2.RandomResizedCrop(backbone.image_size, scale=(0.5, 1.0), antialias=True),
                            v2.RandomHorizontalFlip()])
            return torch.stack([_encode_stream(backbone, Preprocessed(dataset.images, backbone.preprocess,
                                                                      (t, (seed, e))), batch_size, False, "")
                                for e in tqdm(range(epochs), disable=not progress,
                                              desc=f"augmented passes {dataset.name}")])
        g = torch.Generator().manual_seed(seed)
        imgs, out = dataset.images, []
        for _ in tqdm(range(epochs), disable=not progress, desc=f"augmented passes {dataset.name}"):
            out.append(torch.cat([backbone.encode_images(augment(imgs[i:i + batch_size], imgs.shape[1], g))
                                  for i in range(0, len(dataset), batch_size)]))
        return torch.stack(out)

    return cache.get_or_compute("augmented_features", key, compute)


class ShotViews:
    """Augmented views ``[E, n, D]`` of the train images at positions ``rows`` (``None``: every train image, in order);
    ``take(idx)`` gives those of train positions ``idx``, ``[E, len(idx), D]``."""

    def __init__(self, views: torch.Tensor, rows=None):
        self.views, self.rows = views, None if rows is None else np.asarray(rows)

    def take(self, idx) -> torch.Tensor:
        idx = np.asarray(idx)
        if self.rows is None:
            return self.views[:, torch.as_tensor(idx)]
        pos = np.minimum(np.searchsorted(self.rows, idx), len(self.rows) - 1)
        if not np.array_equal(self.rows[pos], idx):
            raise ValueError("these views cover the few-shot draws of their `shots` and `seeds` only; train images "
                             f"{idx[self.rows[pos] != idx][:5].tolist()} are not among them: compute them with every "
                             "shot count and seed the experiments draw")
        return self.views[:, torch.as_tensor(pos)]


def shot_views(backbone, train, epochs: int, shots=None, seeds: int = 1, seed: int = 0,
               progress: bool = True) -> ShotViews:
    """Augmented views of what the few-shot experiments use: for a real (streamed) train split only the images of the
    ``data.few_shot(labels, k, s)`` draws for ``k`` in ``shots`` and ``s < seeds`` (at most ``max(shots) * seeds`` per
    class instead of CIFAR-10's 45 000 images x ``epochs`` passes); a world task's train split is small and in memory,
    and its views are computed for all of it, as its records were made (and for all of any split if ``shots`` is
    None)."""
    from . import data

    rows, encoded = None, train
    if train.streamed and shots is not None:
        rows = np.unique(np.concatenate([data.few_shot(train.labels, k, s) for k in shots for s in range(seeds)]))
        encoded = train.subset(rows)
    return ShotViews(augmented_features(backbone, encoded, epochs, seed, progress=progress), rows)

