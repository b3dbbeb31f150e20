"""Small random datasets in torchvision's exact on-disk layouts (CIFAR-10, STL-10, EuroSAT, ImageFolder).

Images are noise around a class-specific colour and stripe pattern, so a model can learn something; the content
is otherwise meaningless.  Each writer is idempotent: a folder written with the same parameters is kept, and a
new one is written to a temporary folder and renamed into place, so readers never see half of it.  The md5 sums
of the real CIFAR/STL files cannot match: read them with ``FMCLS_DATASET_CHECKSUMS=off``.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")
_SAME_CLASS = {"car": "automobile"}  # STL-10's car is CIFAR-10's automobile: same pattern, so the shift transfers
_MARKER = ".fmcls-standin.json"
VERSION = 2  # of the images' recipe: a folder written by another version is written again


def class_images(name: str, n: int, size: int, rng: np.random.Generator, style: str = "") -> np.ndarray:
    """uint8 ``[n, size, size, 3]``: class ``name``'s colour and stripes (fixed by the name) + noise from ``rng``;
    a non-empty ``style`` (a shift domain) permutes and dims the colours."""
    c = np.random.default_rng(zlib.crc32(_SAME_CLASS.get(name, name).encode()))
    colour, angle, freq = 128 + 0.5 * (c.uniform(50, 205, 3) - 128), c.uniform(0, np.pi), c.uniform(1.5, 4)
    yy, xx = np.mgrid[0:1:size * 1j, 0:1:size * 1j]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    # weak signal, strong noise: probes on random-weight features land between chance and perfect (with the lane's
    # ViT: 1 / 4 / 16 shots about 53 / 63 / 88 %), so the lessons' comparisons have something to compare
    x = colour + 15 * stripes[..., None] + rng.normal(0, 90, (n, size, size, 3))
    if style:
        s = np.random.default_rng(zlib.crc32(style.encode()))
        x = 0.8 * x[..., s.permutation(3)] + 20
    return np.clip(x, 0, 255).astype(np.uint8)


def _balanced(classes, per_class: int, size: int, rng, style: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Shuffled images and labels, ``per_class`` of each class."""
    labels = rng.permutation(np.repeat(np.arange(len(classes)), per_class))
    images = np.empty((len(labels), size, size, 3), np.uint8)
    for k, name in enumerate(classes):
        images[labels == k] = class_images(name, per_class, size, rng, style)
    return images, labels


def _write_once(target: Path, params: dict, write) -> Path:
    """Run ``write(tmp_dir)`` and rename the result to ``target`` unless ``target`` holds the same ``params``."""
    target = Path(target)
    marker = target / _MARKER
    params = {**params, "version": VERSION}
    if marker.exists() and json.loads(marker.read_text()) == params:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write(tmp)
        (tmp / _MARKER).write_text(json.dumps(params, sort_keys=True))
        old = None
        if target.exists():  # other parameters: swap the new folder in, then delete the old one
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            os.replace(target, old / "x")
        try:
            os.replace(tmp, target)
        except OSError:  # a concurrent writer got there first
            if not (marker.exists() and json.loads(marker.read_text()) == params):
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_cifar10(root, train_per_class: int = 32, test_per_class: int = 20, seed: int = 0) -> Path:
    """``<root>/cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch``, ``batches.meta`` (pickles, as
    ``torchvision.datasets.CIFAR10`` reads them)."""
    params = {"kind": "cifar10", "train_per_class": train_per_class, "test_per_class": test_per_class,
              "seed": seed}

    def write(d: Path):
        rng = np.random.default_rng(seed)
        train, test = (_balanced(CIFAR10_CLASSES, n, 32, rng) for n in (train_per_class, test_per_class))
        batches = [(f"data_batch_{i + 1}", f"training batch {i + 1} of 5", part)
                   for i, part in enumerate(np.array_split(np.arange(len(train[1])), 5))]
        for fname, label, idx, (x, y) in [(f, b, i, train) for f, b, i in batches] + \
                                         [("test_batch", "testing batch 1 of 1", np.arange(len(test[1])), test)]:
            entry = {"batch_label": label, "labels": y[idx].tolist(),
                     "data": x[idx].transpose(0, 3, 1, 2).reshape(len(idx), -1),  # rows of CHW, as CIFAR's
                     "filenames": [f"standin_{i}.png" for i in idx]}
            (d / fname).write_bytes(pickle.dumps(entry, protocol=2))
        meta = {"num_cases_per_batch": len(batches[0][2]), "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
        (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))

    return _write_once(Path(root) / "cifar-10-batches-py", params, write)


def _stl_bin(images: np.ndarray) -> bytes:
    return images.transpose(0, 3, 2, 1).tobytes()  # STL-10's files are column-major: N x C x W x H


def write_stl10(root, train_per_class: int = 20, test_per_class: int = 20, unlabeled: int = 10,
                seed: int = 0) -> Path:
    """``<root>/stl10_binary/``: ``{train,test}_{X,y}.bin``, ``unlabeled_X.bin``, ``class_names.txt``,
    ``fold_indices.txt`` (96 px, as ``torchvision.datasets.STL10`` reads them)."""
    params = {"kind": "stl10", "train_per_class": train_per_class, "test_per_class": test_per_class,
              "unlabeled": unlabeled, "seed": seed}

    def write(d: Path):
        rng = np.random.default_rng(seed + 1)  # not CIFAR's draw
        for split, n in (("train", train_per_class), ("test", test_per_class)):
            x, y = _balanced(STL10_CLASSES, n, 96, rng)
            (d / f"{split}_X.bin").write_bytes(_stl_bin(x))
            (d / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())  # 1-based on disk
        u = np.concatenate([class_images(STL10_CLASSES[i % 10], 1, 96, rng) for i in range(unlabeled)]) \
            if unlabeled else np.empty((0, 96, 96, 3), np.uint8)
        (d / "unlabeled_X.bin").write_bytes(_stl_bin(u))
        (d / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
        folds = np.array_split(rng.permutation(10 * train_per_class), 10)
        (d / "fold_indices.txt").write_text("".join(" ".join(map(str, f)) + "\n" for f in folds))

    return _write_once(Path(root) / "stl10_binary", params, write)


def write_imagefolder(root, classes, splits=("train", "val", "test"), per_class=8, size: int = 32,
                      seed: int = 0, ext: str = "png") -> Path:
    """``<root>/<split>/<class>/<i>.<ext>`` for every split (or shift domain) in ``splits``; ``per_class`` is one
    number or ``{split: number}``.  Splits other than train/val/test are drawn in a shifted style."""
    from PIL import Image

    root = Path(root)
    for split in splits:
        n = per_class[split] if isinstance(per_class, dict) else per_class
        params = {"kind": "imagefolder", "classes": list(classes), "per_class": n, "size": size, "seed": seed,
                  "ext": ext}

        def write(d: Path, split=split, n=n):
            rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
            style = "" if split in ("train", "val", "test") else split
            for name in classes:
                (d / name).mkdir()
                for i, im in enumerate(class_images(name, n, size, rng, style)):
                    Image.fromarray(im).save(d / name / f"{name}_{i}.{ext}")

        _write_once(root / split, params, write)
    return root


def write_eurosat(root, per_class: int = 10, seed: int = 0) -> Path:
    """``<root>/eurosat/2750/<Class>/<Class>_<i>.jpg`` (64 px), as ``torchvision.datasets.EuroSAT`` reads it."""
    return write_imagefolder(Path(root) / "eurosat", EUROSAT_CLASSES, ("2750",), per_class, 64, seed, "jpg")
