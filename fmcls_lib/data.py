"""Datasets by name: the world's tasks (embedded default) and torchvision datasets (real path).

``load("world/shapes", split="test", domain="sketch")`` is lazy: it knows its identity (what the
feature cache is keyed on) without rendering; images are rendered on first access.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import cache, world
from .errors import OfflineModelError, UnknownNameError

# torchvision classes for the real path: name -> (class, how its constructor names the split)
TORCHVISION = {
    "cifar10": ("CIFAR10", "train_flag"), "cifar100": ("CIFAR100", "train_flag"),
    "stl10": ("STL10", "split"), "dtd": ("DTD", "split"), "eurosat": ("EuroSAT", None),
    "oxford_pets": ("OxfordIIITPet", "split_trainval"), "food101": ("Food101", "split"),
}
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1
SPLIT_SIZES = ("full", "smoke")
# the size of the world's evaluation splits in this process: "full" (400 test / 100 val images per class) or
# "smoke" (a small prefix of each); lessons set it from their `smoke` parameter, tests through $FMCLS_SPLITS
_split_size = os.environ.get("FMCLS_SPLITS", "full")


@dataclass
class Dataset:
    name: str
    split: str
    domain: str
    classnames: tuple[str, ...]
    labels: np.ndarray
    _loader: callable = field(repr=False)

    @property
    def key(self) -> dict:
        return {"dataset": self.name, "split": self.split, "domain": self.domain, "n": len(self.labels),
                "world_version": world.WORLD_VERSION if self.name.startswith("world/") else None}

    @functools.cached_property
    def images(self):
        """uint8 ``[N, H, W, 3]`` for world tasks; a list of PIL images for torchvision datasets."""
        return self._loader()

    def __len__(self):
        return len(self.labels)


def set_split_sizes(size: str) -> None:
    """Use the ``"full"`` or the ``"smoke"`` evaluation splits of the world's tasks from now on (train is the same
    in both; smoke splits are prefixes of the full ones)."""
    global _split_size
    _check("split size", size, SPLIT_SIZES)
    _split_size = size


def split_sizes() -> str:
    return _split_size


def names() -> list[str]:
    return list(world.TASKS) + list(TORCHVISION)


def _check(kind, given, accepted):
    if given not in accepted:
        raise UnknownNameError(kind, given, accepted)


def load(name: str, split: str = "test", domain: str = "photo") -> Dataset:
    _check("split", split, SPLITS)
    if name in world.TASKS:
        _check("domain", domain, world.DOMAINS)
        _check("split size ($FMCLS_SPLITS)", _split_size, SPLIT_SIZES)
        per_class = world.SMOKE_PER_CLASS[name][split] if _split_size == "smoke" else None
        scenes, labels = world.task_scenes(name, split, domain, per_class)
        return Dataset(name, split, domain, world.TASKS[name].classnames, labels,
                       lambda: world.render_many(scenes))
    if name in TORCHVISION:
        return _load_torchvision(name, split)
    raise UnknownNameError("dataset", name, names())


def _load_torchvision(name: str, split: str) -> Dataset:
    """A torchvision dataset from ``$FMCLS_CACHE/datasets`` (download=False; fetch it online once).

    ``val`` is a fixed 10 % of the official training split, so ``train`` is the other 90 %.
    """
    import torchvision.datasets as tvd

    cls_name, how = TORCHVISION[name]
    root = Path(os.environ.get("FMCLS_DATA", cache.cache_dir() / "datasets"))
    official = "test" if split == "test" else "train"
    kwargs = {"train_flag": {"train": official == "train"}, "split": {"split": official},
              "split_trainval": {"split": "test" if split == "test" else "trainval"},
              None: {}}[how]
    try:
        ds = getattr(tvd, cls_name)(root=str(root), download=False, **kwargs)
    except (RuntimeError, FileNotFoundError) as e:
        raise OfflineModelError(
            f"dataset {name!r} is not in {root}. On a machine with network run once:  python -c "
            f"\"import torchvision; torchvision.datasets.{cls_name}(root='{root}', download=True"
            f"{''.join(f', {k}={v!r}' for k, v in kwargs.items())})\"") from e
    targets = np.array([ds[i][1] for i in range(len(ds))]) if not hasattr(ds, "targets") \
        else np.asarray(ds.targets)
    idx = np.arange(len(ds))
    if split != "test":
        perm = np.random.default_rng(0).permutation(len(ds))
        n_val = int(len(ds) * VAL_FRACTION)
        idx = np.sort(perm[:n_val] if split == "val" else perm[n_val:])
    classes = tuple(getattr(ds, "classes", [str(c) for c in sorted(set(targets))]))
    return Dataset(name, split, "photo", classes, targets[idx],
                   lambda: [ds[i][0].convert("RGB") for i in idx])


def few_shot(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` examples per class, drawn with ``seed`` (sorted; same seed, same draw)."""
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise ValueError(f"shots must be a whole number of examples per class, at least 1; got {shots!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        if len(pool) < shots:
            raise ValueError(f"class {c} has only {len(pool)} examples; {shots} shots requested")
        out.append(rng.choice(pool, shots, replace=False))
    return np.sort(np.concatenate(out))


def from_arrays(images: np.ndarray, labels, classnames, name: str = "synthetic") -> Dataset:
    """A dataset of in-memory uint8 images (e.g. generated ones), keyed by a hash of its content so the
    feature cache can never serve another set's features."""
    import hashlib
    images = np.ascontiguousarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
        raise ValueError(f"expected uint8 images [N, H, W, 3] and N labels; got {images.dtype} "
                         f"{images.shape} and {labels.shape}")
    h = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    return Dataset(f"{name}:{h}", "train", name, tuple(classnames), labels, lambda: images)
