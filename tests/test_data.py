import numpy as np
import pytest

import fmcls_lib as fm
from fmcls_lib import data, features


def test_few_shot_is_seeded_and_balanced():
    y = np.repeat(np.arange(5), 20)
    a, b, c = data.few_shot(y, 4, 0), data.few_shot(y, 4, 0), data.few_shot(y, 4, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (np.bincount(y[a]) == 4).all()
    with pytest.raises(ValueError, match="only 20"):
        data.few_shot(y, 21, 0)


def test_bad_names_are_clear_errors():
    with pytest.raises(fm.UnknownNameError, match="sketch"):
        data.load("world/shapes", domain="watercolour")
    with pytest.raises(fm.UnknownNameError, match="world/shapes"):
        data.load("imagenet-9000")
    with pytest.raises(fm.UnknownNameError, match="val"):
        data.load("world/shapes", split="dev")


def test_dataset_is_lazy_until_images_are_needed():
    ds = data.load("world/colors", split="val", domain="pixel")
    assert "images" not in ds.__dict__ and len(ds) == 250
    assert ds.images.shape == (250, 32, 32, 3)


def test_torchvision_dataset_offline_names_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FMCLS_DATA", str(tmp_path / "ds"))
    with pytest.raises(fm.OfflineModelError, match="download=True") as e:
        data.load("cifar10", split="test")
    assert str(tmp_path / "ds") in str(e.value)


def test_features_cached_normalised_and_keyed_by_backbone(micro, monkeypatch):
    ds = data.load("world/shapes", split="val", domain="painting")
    f1 = features.image_features(micro, ds, progress=False)
    assert f1.shape == (len(ds), 32)
    np.testing.assert_allclose(f1.norm(dim=-1).numpy(), 1, atol=1e-5)
    fresh = data.load("world/shapes", split="val", domain="painting")
    monkeypatch.setattr(type(micro), "encode_images", lambda *a: pytest.fail("cache hit recomputed"))
    f2 = features.image_features(micro, fresh, progress=False)
    assert "images" not in fresh.__dict__  # a hit does not even render
    assert (f1 == f2).all()
    assert features.feature_key(micro, ds) != features.feature_key(micro, data.load("world/shapes", "test", "painting"))


def test_few_shot_needs_at_least_one_shot():
    y = np.repeat(np.arange(5), 20)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match=r"shots must be a whole number of examples per class, at least 1; "
                                             rf"got {bad}"):
            data.few_shot(y, bad, 0)


def test_to_tensor_scales_resizes_and_normalises():
    import torch
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    t = data.to_tensor(x)
    assert t.shape == (3, 3, 8, 8) and torch.equal(t, torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    n = data.to_tensor(x, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), size=4)
    torch.testing.assert_close(n, (torch.nn.functional.avg_pool2d(t, 2) - 0.5) / 0.25)
