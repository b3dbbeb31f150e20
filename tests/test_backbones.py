import time

import pytest
import torch

import fmcls_lib as fm
from fmcls_lib import backbones


def test_unknown_backbone_lists_accepted_names():
    with pytest.raises(fm.UnknownNameError) as e:
        backbones.load_clip("resnet-9000")
    assert "tiny" in str(e.value) and "ViT-B-32/openai" in str(e.value)


def test_unknown_pretrained_pair():
    with pytest.raises(fm.UnknownNameError, match="ViT-B-32/openai"):
        backbones.load_clip("ViT-B-32/not-a-tag")


def test_real_model_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    t0 = time.time()
    with pytest.raises(fm.OfflineModelError) as e:
        backbones.load_clip("ViT-B-32/openai")
    msg = str(e.value)
    assert str(tmp_path / "hub") in msg and "pretrained='openai'" in msg and "checkpoint=" in msg
    assert time.time() - t0 < 30  # "fails within a second"; generous bound for shared machines


def test_local_checkpoint_file_loads(micro, tmp_path):
    path = tmp_path / "micro.pt"
    torch.save(micro.model.state_dict(), path)
    local = backbones.load_clip("fmcls-micro", checkpoint=str(path))
    x = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8).numpy()
    torch.testing.assert_close(local.encode_images(x), micro.encode_images(x))
    assert local.id != micro.id or local.weights_hash != micro.weights_hash


def test_bad_checkpoint_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        backbones.load_clip("fmcls-micro", checkpoint=str(tmp_path / "nope.pt"))
    bad = tmp_path / "other.pt"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(fm.CorruptFileError, match="fmcls-micro"):
        backbones.load_clip("fmcls-micro", checkpoint=str(bad))


def test_device_auto_is_cpu_here():
    assert backbones.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
