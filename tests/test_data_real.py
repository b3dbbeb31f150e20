"""The real-data path on stand-ins written in torchvision's own on-disk layouts (tiny, random images)."""
import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

import fmcls_lib as fm
from fmcls_lib import cache, data, features
from fmcls_lib.standins import datasets as standins

CLASSES = ("cat", "dog", "fox", "owl")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("real_data")
    standins.write_cifar10(r, train_per_class=6, test_per_class=4)
    standins.write_stl10(r, train_per_class=2, test_per_class=3)
    standins.write_eurosat(r, per_class=5)
    standins.write_imagefolder(r / "folder", CLASSES, ("train", "val", "test"), {"train": 4, "val": 2, "test": 3})
    standins.write_imagefolder(r / "folder", CLASSES[1:3], ("rendition",), 2)  # a shift with a subset of classes
    standins.write_imagefolder(r / "folder", CLASSES, ("sketch",), 1)
    return r


@pytest.fixture
def env(root, monkeypatch):
    monkeypatch.setenv("FMCLS_DATA", str(root))
    monkeypatch.setenv("FMCLS_DATASET_CHECKSUMS", "off")
    monkeypatch.setattr(data, "_split_size", "full")
    return root


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision's own classes, reading the stand-ins without comparing md5 sums (the independent reference)."""
    for mod in (tvd.cifar, tvd.stl10):
        monkeypatch.setattr(mod, "check_integrity", lambda path, md5=None: __import__("os").path.isfile(path))


def test_writers_are_idempotent_and_read_back_by_torchvision(env, no_md5, tmp_path):
    marker = env / "cifar-10-batches-py" / ".fmcls-standin.json"
    t = marker.stat().st_mtime_ns
    standins.write_cifar10(env, train_per_class=6, test_per_class=4)
    assert marker.stat().st_mtime_ns == t  # same parameters: kept
    standins.write_cifar10(tmp_path, train_per_class=1, test_per_class=2)
    standins.write_cifar10(tmp_path, train_per_class=2, test_per_class=1)  # other parameters: replaced
    assert len(tvd.CIFAR10(tmp_path, train=True)) == 20 and len(tvd.CIFAR10(tmp_path, train=False)) == 10
    stl = tvd.STL10(env, split="test")
    assert stl.classes == list(standins.STL10_CLASSES) and np.bincount(stl.labels).tolist() == [3] * 10
    assert stl[0][0].size == (96, 96) and len(tvd.STL10(env, split="unlabeled")) == 10
    assert tvd.EuroSAT(env).classes == list(standins.EUROSAT_CLASSES)


def test_cifar10_labels_and_images_are_torchvisions(env, no_md5):
    ref = {s: tvd.CIFAR10(env, train=s) for s in (True, False)}
    seen = []
    for split in data.SPLITS:
        ds = data.load("cifar10", split)
        tv = ref[split != "test"]
        assert ds.classnames == tuple(tv.classes)
        np.testing.assert_array_equal(ds.labels, [tv[i][1] for i in ds._index])
        j = len(ds) // 2
        np.testing.assert_array_equal(np.asarray(ds.images[j]), np.asarray(tv[int(ds._index[j])][0]))
        seen.append(set(ds._index) if split != "test" else set())
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 60  # val is carved out of train


def test_labels_are_read_without_decoding_an_image(env, monkeypatch):
    def no(*a):
        raise AssertionError("an image was decoded to read labels")
    for cls in (tvd.CIFAR10, tvd.STL10, tvd.DatasetFolder):
        monkeypatch.setattr(cls, "__getitem__", no)
    data._open.cache_clear()
    for name, domain in (("cifar10", "photo"), ("cifar10", "stl10"), ("stl10", "photo"), ("eurosat", "photo"),
                         (f"imagefolder:{env / 'folder'}", "rendition")):
        assert len(data.load(name, "test", domain).labels) > 0


def test_missing_files_and_md5_mismatch_are_clear_errors(env, tmp_path, monkeypatch):
    monkeypatch.setenv("FMCLS_DATA", str(tmp_path))
    with pytest.raises(fm.OfflineModelError, match="download=True"):
        data.load("cifar10", "test")
    standins.write_cifar10(tmp_path, train_per_class=1, test_per_class=1)
    with pytest.raises(fm.OfflineModelError, match="STL10"):  # the shift's own files are missing
        data.load("cifar10", "test", "stl10")
    monkeypatch.setenv("FMCLS_DATA", str(env))
    monkeypatch.setenv("FMCLS_DATASET_CHECKSUMS", "on")  # the stand-ins' md5 sums are not the real files'
    with pytest.raises(fm.OfflineModelError, match=str(env)):
        data.load("cifar10", "test")
    monkeypatch.setenv("FMCLS_DATASET_CHECKSUMS", "no")
    with pytest.raises(fm.UnknownNameError, match="off"):
        data.load("cifar10", "test")
    with pytest.raises(fm.UnknownNameError, match="imagefolder:<path>"):
        data.load("imagenet-9000")


def test_stl10_shift_keeps_cifar10s_classes(env, no_md5):
    assert data.domains("cifar10") == ("photo", "stl10") and data.domains("world/shapes") == fm.world.DOMAINS
    ds = data.load("cifar10", "test", domain="stl10")
    stl = tvd.STL10(env, split="test")
    assert ds.classnames == data.load("cifar10", "test").classnames
    theirs = [stl.classes[stl.labels[i]] for i in ds._index]
    ours = [ds.classnames[y] for y in ds.labels]
    assert [{"car": "automobile"}.get(c, c) for c in theirs] == ours
    assert "monkey" not in theirs and "frog" not in ours and len(set(ours)) == 9 and len(ds) == 27
    assert ds.images[0].size == (96, 96)
    with pytest.raises(ValueError, match="split='test'"):
        data.load("cifar10", "val", domain="stl10")


def test_eurosat_splits_are_disjoint_stratified_and_fixed(env):
    paths = {}
    for split in data.SPLITS:
        ds = data.load("eurosat", split)
        files = data._open(*ds.images.source).samples
        paths[split] = {files[i][0] for i in ds._index}
        assert len(paths[split]) == len(ds) and (np.bincount(ds.labels) == np.bincount(ds.labels)[0]).all()
        np.testing.assert_array_equal(ds._index, data.load("eurosat", split)._index)
    assert not paths["train"] & paths["val"] and not paths["train"] & paths["test"] and not paths["val"] & paths["test"]
    assert sum(map(len, paths.values())) == 50 and [len(p) for p in paths.values()] == [30, 10, 10]


def test_imagefolder_task_and_its_shift_folders(env):
    name = f"imagefolder:{env / 'folder'}"
    assert data.domains(name) == ("photo", "rendition", "sketch")
    test = data.load(name, "test")
    assert test.classnames == CLASSES and np.bincount(test.labels).tolist() == [3] * 4
    r = data.load(name, "test", "rendition")
    files = data._open(*r.images.source).samples
    assert [r.classnames[y] for y in r.labels] == [f.split("/")[-2] for f, _ in files]  # matched by folder name
    assert set(r.labels) == {1, 2}
    keys = [data.load(name, s, d).key for s, d in (("train", "photo"), ("val", "photo"), ("test", "photo"),
                                                   ("test", "rendition"), ("test", "sketch"))]
    assert len({cache.key_digest(k) for k in keys}) == len(keys)
    with pytest.raises(fm.UnknownNameError, match="rendition"):
        data.load(name, "test", "painting")
    standins.write_imagefolder(env / "folder2", CLASSES[:2], ("test",), 1)
    standins.write_imagefolder(env / "folder2", ("cat", "wolf"), ("odd",), 1)
    with pytest.raises(fm.UnknownNameError, match="wolf"):
        data.load(f"imagefolder:{env / 'folder2'}", "test", "odd")
    with pytest.raises(FileNotFoundError, match="train"):
        data.load(f"imagefolder:{env / 'nowhere'}", "test")


def test_smoke_splits_are_seeded_subsets_of_the_full_ones(env, monkeypatch):
    monkeypatch.setattr(data, "REAL_SMOKE_PER_CLASS", {"train": 3, "val": 1, "test": 2})
    for name, domain in (("cifar10", "photo"), ("cifar10", "stl10"), ("eurosat", "photo")):
        full = {s: data.load(name, s, domain) for s in (("test",) if domain != "photo" else data.SPLITS)}
        data.set_split_sizes("smoke")
        for s, f in full.items():
            small = data.load(name, s, domain)
            k, most = data.REAL_SMOKE_PER_CLASS[s], np.bincount(f.labels).max()
            assert set(small._index) <= set(f._index) and (len(small) < len(f) or most <= k)
            assert np.bincount(small.labels).max() == min(k, most)
            assert small.key != f.key or len(small) == len(f)
            np.testing.assert_array_equal(small._index, data.load(name, s, domain)._index)
        data.set_split_sizes("full")


def test_streamed_features_equal_the_direct_computation(env, micro, no_md5, monkeypatch):
    ds = data.load("cifar10", "test")
    tv = tvd.CIFAR10(env, train=False)
    want = micro.encode_images([tv[int(i)][0] for i in ds._index])
    for workers_from in (10**9, 1):  # in the main process, then with loader workers
        monkeypatch.setattr(features, "LOADER_WORKERS_FROM", workers_from)
        monkeypatch.setenv("FMCLS_WORKERS", "2")  # workers even on a 2-core machine
        cache.entry_path("features", features.feature_key(micro, ds)).unlink(missing_ok=True)
        torch.testing.assert_close(features.image_features(micro, ds, batch_size=16, progress=False), want)


def test_subset_has_its_own_key_and_the_parents_images(env, micro, monkeypatch):
    ds = data.load("cifar10", "train")
    idx = data.few_shot(ds.labels, 2, seed=0)
    sub = ds.subset(idx)
    np.testing.assert_array_equal(sub.labels, ds.labels[idx])
    assert sub.key != ds.key and sub.key != ds.subset(idx[:-1]).key and sub.key == ds.subset(idx).key
    torch.testing.assert_close(features.image_features(micro, sub, progress=False),
                               features.image_features(micro, ds, progress=False)[idx])
    views = []
    for workers_from in (10**9, 1):
        monkeypatch.setattr(features, "LOADER_WORKERS_FROM", workers_from)
        monkeypatch.setenv("FMCLS_WORKERS", "2")
        key = {**features.feature_key(micro, sub), "augment": features.AUGMENT, "epochs": 2, "seed": 0}
        cache.entry_path("augmented_features", key).unlink(missing_ok=True)
        views.append(features.augmented_features(micro, sub, epochs=2, seed=0, progress=False))
    assert views[0].shape == (2, len(idx), 32) and not torch.equal(views[0][0], views[0][1])
    torch.testing.assert_close(views[0], views[1])  # the draw does not depend on the loader workers
    w = data.load("world/shapes", "val", "sketch")
    ws = w.subset([3, 0, 7])
    assert ws.images.shape[0] == 3 and "images" not in w.__dict__  # the subset renders its own scenes only
    np.testing.assert_array_equal(ws.images, w.images[[3, 0, 7]])
    assert ws.key["subset"] and {k: v for k, v in ws.key.items() if k not in ("subset", "n")} == \
        {k: v for k, v in w.key.items() if k != "n"}
