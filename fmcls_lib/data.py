"""Datasets by name: the world's tasks (embedded default), torchvision datasets and ImageFolder trees (real path).

``load("world/shapes", split="test", domain="sketch")`` is lazy: it knows its identity (what the
feature cache is keyed on) without rendering; images are rendered on first access.  Real datasets read
their labels without decoding an image, and decode images one at a time (``Dataset.images``).
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import cache, world
from .errors import OfflineModelError, UnknownNameError

# torchvision classes for the real path: name -> (class, how its constructor names the split)
TORCHVISION = {
    "cifar10": ("CIFAR10", "train_flag"), "cifar100": ("CIFAR100", "train_flag"),
    "stl10": ("STL10", "split"), "dtd": ("DTD", "split3"), "eurosat": ("EuroSAT", None),
    "oxford_pets": ("OxfordIIITPet", "split_trainval"), "food101": ("Food101", "split"),
}
# shifts on the real path: task -> {domain: (dataset whose test split is the shifted one, its class -> task's class)}
# CIFAR-10 -> STL-10 on their 9 shared classes (STL's car is CIFAR's automobile; frog and monkey are dropped)
REAL_SHIFTS = {"cifar10": {"stl10": ("stl10", {"car": "automobile"})}}
IMAGEFOLDER = "imagefolder:"  # imagefolder:<root> with <root>/{train,val,test}/<class>/; other folders are shifts
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1
UNSPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train/val/test of a dataset without an official split (stratified, seed 0)
SPLIT_SIZES = ("full", "smoke")
# the size of the evaluation splits in this process: "full" (the world: 400 test / 100 val images per class) or
# "smoke" (a small subset of each); lessons set it from their `smoke` parameter, tests through $FMCLS_SPLITS
_split_size = os.environ.get("FMCLS_SPLITS", "full")
# smoke splits of real datasets: a seeded subset of each class, train too (a smoke fine-tune on CIFAR-10's 45 000 train
# images would take hours on a CPU); the world's smoke train split is its full one
REAL_SMOKE_PER_CLASS = {"train": 100, "val": 25, "test": 50}


@dataclass
class Dataset:
    name: str
    split: str
    domain: str
    classnames: tuple[str, ...]
    labels: np.ndarray
    _loader: callable = field(repr=False)
    _take: callable = field(default=None, repr=False)  # indices -> those images only (world, arrays)
    _source: tuple = field(default=None, repr=False)  # real datasets: how to open them (see _open)
    _index: np.ndarray = field(default=None, repr=False)  # real datasets: this split's indices into the source
    _key: dict = field(default_factory=dict, repr=False)  # added to `key` (real datasets, subsets)

    @property
    def key(self) -> dict:
        return {"dataset": self.name, "split": self.split, "domain": self.domain, "n": len(self.labels),
                "world_version": world.WORLD_VERSION if self.name.startswith("world/") else None, **self._key}

    @property
    def streamed(self) -> bool:
        """Whether images are files decoded one at a time (real datasets) rather than one in-memory array."""
        return self._source is not None

    @functools.cached_property
    def images(self):
        """uint8 ``[N, H, W, 3]`` for world tasks; for real datasets a sequence of PIL images decoded on access
        (an int gives one image, a slice or an index array a list)."""
        return RealImages(self._source, self._index) if self.streamed else self._loader()

    def subset(self, indices) -> "Dataset":
        """The images at ``indices`` only (e.g. the few-shot ones), keyed by a hash of the indices."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        h = hashlib.sha256(self._key.get("subset", "").encode() + idx.tobytes()).hexdigest()[:16]
        extra = {**self._key, "subset": h}
        if self.streamed:
            return Dataset(self.name, self.split, self.domain, self.classnames, self.labels[idx], None,
                           _source=self._source, _index=self._index[idx], _key=extra)
        take = self._take or (lambda i: self.images[i])

        def load():
            return self.images[idx] if "images" in self.__dict__ else take(idx)
        return Dataset(self.name, self.split, self.domain, self.classnames, self.labels[idx], load,
                       lambda i: take(idx[i]), _key=extra)

    def __len__(self):
        return len(self.labels)


class RealImages:
    """PIL images of a torchvision or ImageFolder dataset, opened one at a time (picklable for loader workers)."""

    def __init__(self, source: tuple, index: np.ndarray):
        self.source, self.index = source, index

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            return _open(*self.source)[int(self.index[i])][0].convert("RGB")
        return [self[int(j)] for j in np.arange(len(self))[i]]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def set_split_sizes(size: str) -> None:
    """Use the ``"full"`` or the ``"smoke"`` splits from now on (a world task's train split is the same in both; smoke
    splits are subsets of the full ones: prefixes for the world's tasks, seeded per-class draws for real ones)."""
    global _split_size
    _check("split size", size, SPLIT_SIZES)
    _split_size = size


def split_sizes() -> str:
    return _split_size


def names() -> list[str]:
    return list(world.TASKS) + list(TORCHVISION) + [f"{IMAGEFOLDER}<path>"]


def domains(task: str) -> tuple[str, ...]:
    """The domains of ``task``: ``photo`` first, then its distribution shifts."""
    if task in world.TASKS:
        return world.DOMAINS
    if task in TORCHVISION:
        return ("photo", *REAL_SHIFTS.get(task, ()))
    if task.startswith(IMAGEFOLDER):
        root = _imagefolder_root(task)
        return ("photo", *sorted(d.name for d in root.iterdir()
                                 if d.is_dir() and d.name not in (*SPLITS, "photo") and not d.name.startswith(".")))
    raise UnknownNameError("dataset", task, names())


def _check(kind, given, accepted):
    if given not in accepted:
        raise UnknownNameError(kind, given, accepted)


def load(name: str, split: str = "test", domain: str = "photo") -> Dataset:
    _check("split", split, SPLITS)
    _check("split size ($FMCLS_SPLITS)", _split_size, SPLIT_SIZES)
    if name in world.TASKS:
        _check("domain", domain, world.DOMAINS)
        per_class = world.SMOKE_PER_CLASS[name][split] if _split_size == "smoke" else None
        scenes, labels = world.task_scenes(name, split, domain, per_class)
        return Dataset(name, split, domain, world.TASKS[name].classnames, labels,
                       lambda: world.render_many(scenes), lambda i: world.render_many([scenes[j] for j in i]))
    if name in TORCHVISION or name.startswith(IMAGEFOLDER):
        _check("domain", domain, domains(name))
        if domain != "photo" and split != "test":
            raise ValueError(f"the {domain!r} shift of {name!r} is for evaluation only: load it with "
                             f"split='test' (got {split!r}); train and validate on 'photo'")
        source, idx, labels, classes = (_load_imagefolder if name.startswith(IMAGEFOLDER) else
                                        _load_torchvision)(name, split, domain)
        if _split_size == "smoke" and split in REAL_SMOKE_PER_CLASS:
            keep = _per_class_subset(labels, REAL_SMOKE_PER_CLASS[split])
            idx, labels = idx[keep], labels[keep]
        return Dataset(name, split, domain, classes, labels, None, _source=source, _index=idx,
                       _key={"root": source[1]})
    raise UnknownNameError("dataset", name, names())


def _per_class_subset(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Sorted positions of the first ``per_class`` images of each class in a fixed (seed 0) shuffle."""
    perm = np.random.default_rng(0).permutation(len(labels))
    keep = np.concatenate([perm[labels[perm] == c][:per_class] for c in np.unique(labels)])
    return np.sort(keep)


def _checksums() -> bool:
    v = os.environ.get("FMCLS_DATASET_CHECKSUMS", "on")
    _check("value of $FMCLS_DATASET_CHECKSUMS", v, ("on", "off"))
    return v == "on"


@functools.lru_cache(maxsize=16)
def _open(kind: str, root: str, cls_name: str = "", kwargs: tuple = (), checksums: bool = True):
    """The torchvision dataset object behind a real dataset, opened once per process."""
    import torchvision.datasets as tvd

    if kind == "imagefolder":
        return tvd.ImageFolder(root)
    cls = getattr(tvd, cls_name)
    if not checksums:
        # FMCLS_DATASET_CHECKSUMS=off: for stand-ins written in the real layout with other content; tests only.
        # The files must still exist (check_integrity with md5=None), only their md5 sums are not compared.
        over = {a: [[f, None] for f, *_ in getattr(cls, a)] for a in ("train_list", "test_list") if hasattr(cls, a)}
        if isinstance(getattr(cls, "meta", None), dict):
            over["meta"] = {**cls.meta, "md5": None}
        cls = type(cls.__name__, (cls,), over)
    return cls(root=root, download=False, **dict(kwargs))


def _labels(ds) -> np.ndarray:
    """Labels as torchvision stores them (``targets`` / ``labels`` / ``_labels``), without decoding an image."""
    for attr in ("targets", "labels", "_labels"):
        if getattr(ds, attr, None) is not None:
            return np.asarray(getattr(ds, attr), dtype=np.int64)
    raise TypeError(f"{type(ds).__name__} keeps its labels in none of targets, labels, _labels")


def _split_positions(labels: np.ndarray, split: str, official: bool) -> np.ndarray:
    """Sorted positions of ``split`` in a set: ``val`` a fixed 10 % of an official training split (``train`` the
    rest); without an official split, a stratified 60/20/20 train/val/test draw (seed 0), disjoint by construction."""
    rng = np.random.default_rng(0)
    if official:
        perm = rng.permutation(len(labels))
        n_val = int(len(labels) * VAL_FRACTION)
        return np.sort(perm[:n_val] if split == "val" else perm[n_val:])
    out = []
    for c in np.unique(labels):
        pool = rng.permutation(np.flatnonzero(labels == c))
        cut = np.round(np.cumsum(UNSPLIT_FRACTIONS)[:2] * len(pool)).astype(int)
        out.append(np.split(pool, cut)[SPLITS.index(split)])
    return np.sort(np.concatenate(out))


def _data_root() -> Path:
    return Path(os.environ.get("FMCLS_DATA", cache.cache_dir() / "datasets"))


def _open_torchvision(name: str, split: str):
    """``(source, torchvision dataset)`` of the official split that holds ``split`` (download=False)."""
    cls_name, how = TORCHVISION[name]
    root = _data_root()
    official = "test" if split == "test" else "train"
    kwargs = {"train_flag": {"train": official == "train"}, "split": {"split": official},
              "split3": {"split": split}, "split_trainval": {"split": "test" if split == "test" else "trainval"},
              None: {}}[how]
    source = ("torchvision", str(root), cls_name, tuple(sorted(kwargs.items())), _checksums())
    try:
        return source, _open(*source)
    except (RuntimeError, FileNotFoundError) as e:
        raise OfflineModelError(
            f"dataset {name!r} is not in {root}. On a machine with network run once:  python -c "
            f"\"import torchvision; torchvision.datasets.{cls_name}(root='{root}', download=True"
            f"{''.join(f', {k}={v!r}' for k, v in kwargs.items())})\"") from e


def _load_torchvision(name: str, split: str, domain: str):
    """``(source, indices, labels, classnames)`` of a torchvision dataset from ``$FMCLS_DATA`` (default
    ``$FMCLS_CACHE/datasets``).  Splits: see :func:`_split_positions`; DTD keeps its official train/val/test."""
    if domain != "photo":
        shifted, rename = REAL_SHIFTS[name][domain]
        classes = _load_torchvision(name, "test", "photo")[3]
        source, ds = _open_torchvision(shifted, "test")
        theirs = [rename.get(c, c) for c in ds.classes]
        to_ours = np.array([classes.index(c) if c in classes else -1 for c in theirs])
        y = to_ours[_labels(ds)]
        idx = np.flatnonzero(y >= 0)
        return source, idx, y[idx], classes
    source, ds = _open_torchvision(name, split)
    y = _labels(ds)
    how = TORCHVISION[name][1]
    idx = np.arange(len(y)) if split == "test" and how is not None or how == "split3" else \
        _split_positions(y, split, official=how is not None)
    classes = tuple(getattr(ds, "classes", None) or [str(c) for c in sorted(set(y))])
    return source, idx, y[idx], classes


def _imagefolder_root(name: str) -> Path:
    root = Path(name[len(IMAGEFOLDER):]).expanduser()
    if not (root / "test").is_dir() and not (root / "train").is_dir():
        raise FileNotFoundError(f"{name!r}: expected class folders in {root}/train, {root}/val and {root}/test "
                                f"(<root>/<split>/<class>/<image>), and shift domains as <root>/<domain>/<class>/")
    return root


def _load_imagefolder(name: str, split: str, domain: str):
    """An ImageFolder task: ``<root>/{train,val,test}/<class>/`` and shift domains ``<root>/<domain>/<class>/``
    (test only).  Class indices are those of test's class folders (train's if there is no test); a domain
    may hold a subset of them (ImageNet-R's 200 of 1000), matched by folder name."""
    from torchvision.datasets.folder import find_classes

    root = _imagefolder_root(name)
    classes = tuple(find_classes(str(root / ("test" if (root / "test").is_dir() else "train")))[0])
    folder = root / (split if domain == "photo" else domain)
    if not folder.is_dir():
        raise FileNotFoundError(f"{name!r} has no {folder} (expected <root>/<split>/<class>/<image>)")
    source = ("imagefolder", str(folder))
    ds = _open(*source)
    unknown = sorted(set(ds.classes) - set(classes))
    if unknown:
        raise UnknownNameError(f"class folder in {folder}", unknown[0], classes)
    y = np.array([classes.index(c) for c in ds.classes])[_labels(ds)]
    return source, np.arange(len(y)), y, classes


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
    images = np.ascontiguousarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
        raise ValueError(f"expected uint8 images [N, H, W, 3] and N labels; got {images.dtype} "
                         f"{images.shape} and {labels.shape}")
    h = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    return Dataset(f"{name}:{h}", "train", name, tuple(classnames), labels, lambda: images, lambda i: images[i])


def to_tensor(images, mean=None, std=None, size: int | None = None):
    """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, H, W]`` in [0, 1], area-resized to ``size`` (if given and not the
    images' size), then ``(x - mean) / std`` (if ``mean`` is given): the embedded models' eval transform."""
    import torch
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
    if size is not None and x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=size, mode="area")
    if mean is None:
        return x
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
