"""The real path on same-architecture stand-ins (``fmcls_lib.standins``): random weights of the real architectures and
small random datasets in torchvision's layouts, reached through the real loaders (a Hugging Face cache, torchvision),
offline.  The lane at the bottom runs every lesson on them, as a student with a GPU runs them on the real models."""
import json
import os
import time

import numpy as np
import pytest
import torch

from fmcls_lib import backbones, cache, course, standins
from fmcls_lib.errors import OfflineModelError, UnknownNameError


@pytest.fixture(scope="session")
def standin_env(tmp_path_factory):
    root = os.environ.get("FMCLS_STANDINS") or str(tmp_path_factory.mktemp("standins"))
    return standins.make(root, vit_b_32=True)


@pytest.fixture
def real_env(standin_env, monkeypatch):
    """The stand-ins' environment in this process (huggingface_hub read $HF_HUB_CACHE at import: patch its copy too)
    and in every kernel a lesson starts."""
    import huggingface_hub.constants as hub
    for k, v in standin_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", standin_env["HF_HUB_CACHE"])
    return standin_env


def test_openai_tag_keeps_quick_gelu_and_its_preprocessing(real_env):
    import open_clip
    clip = backbones.load_clip("ViT-B-32/openai")
    assert isinstance(clip.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert isinstance(clip.model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    cfg = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    norm = clip.preprocess.transforms[-1]
    np.testing.assert_allclose(norm.mean, cfg["mean"])
    np.testing.assert_allclose(norm.std, cfg["std"])
    assert clip.image_size == 224
    from PIL import Image
    imgs = [Image.fromarray(np.full((40, 60, 3), v, np.uint8)) for v in (0, 200)]
    f, t = clip.encode_images(imgs), clip.encode_text(["a photo of a cat.", "a photo of a dog."])
    assert f.shape == (2, 512) and t.shape == (2, 512)
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(2))
    # the same file through a resolved path loses the tag's QuickGELU: what the loader must not do
    path = backbones._real_clip_file("tag", "ViT-B-32", "openai", online=False)
    plain = backbones.load_clip(f"ViT-B-32@{path}")
    assert not isinstance(plain.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert plain.weights_hash == clip.weights_hash


def test_hub_clip_and_local_checkpoint_names(real_env, tmp_path):
    clip = backbones.load_clip(standins.LESSON_PARAMS["backbone"])
    assert clip.image_size == 224 and clip.encode_text(["a cat"]).shape[-1] == standins.models.TINY_VIT_CFG["embed_dim"]
    ckpt = tmp_path / "vit.pt"
    torch.save(clip.model.state_dict(), ckpt)
    assert backbones.parse_clip_name(f"ViT-B-32@{ckpt}") == ("file", "ViT-B-32", str(ckpt))
    # in a lesson: accepted with an existing file; a missing file or unknown architecture is one clear error, at once
    assert course.resolve_params("01_clip_zero_shot", None, {"backbone": f"ViT-B-32@{ckpt}"})
    with pytest.raises(course.ParameterError, match="does not exist"):
        course.resolve_params("01_clip_zero_shot", None, {"backbone": f"ViT-B-32@{tmp_path / 'nope.pt'}"})
    with pytest.raises(UnknownNameError, match="ViT-B-32"):
        course.resolve_params("01_clip_zero_shot", None, {"backbone": f"ViT-Q-99@{ckpt}"})


def test_dino_gets_dino_normalisation(real_env):
    import timm
    want = timm.models.get_pretrained_cfg("vit_small_patch16_224.dino")
    enc = backbones.load_ssl("vit_small_patch16_224.dino")
    assert enc.mean == tuple(want.mean) and enc.std == tuple(want.std) and enc.image_size == 224
    # a local checkpoint of the bare architecture: the DINO tag's settings, not the default tag's mean 0.5
    file = next((standins.models.snapshot(real_env["HF_HUB_CACHE"], "timm/vit_small_patch16_224.dino")).glob("*.safetensors"))
    local = backbones.load_ssl("vit_small_patch16_224", checkpoint=str(file))
    assert local.mean == tuple(want.mean)
    assert local.weights_hash == enc.weights_hash == cache.file_sha256(file)  # the weights file itself, not a name
    f = enc.encode_images(np.zeros((2, 32, 32, 3), np.uint8))
    assert f.shape == (2, 384)


def test_timm_weights_from_a_url_hash_the_file_not_the_name(real_env, tmp_path, monkeypatch):
    """A timm tag whose weights come from a URL (no hub repo): the hash is the downloaded file's, as for the hub."""
    import timm
    name = "vit_small_patch16_224.dino"
    file = next((standins.models.snapshot(real_env["HF_HUB_CACHE"], f"timm/{name}")).glob("*.safetensors"))
    cfg = timm.models.get_pretrained_cfg(name)
    url_cfg = type(cfg)(**{**cfg.to_dict(), "hf_hub_id": None, "url": file.as_uri()})
    orig = timm.models.get_pretrained_cfg
    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda n, *a, **k: url_cfg if n == name else orig(n, *a, **k))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    enc = backbones.load_ssl(name)
    assert enc.weights_hash == cache.file_sha256(file)
    assert (tmp_path / "torch" / "hub" / "checkpoints" / file.name).is_file()  # where timm caches a URL's file


def test_missing_real_models_fail_fast_without_offline_flag(tmp_path, monkeypatch):
    """No network and no HF_HUB_OFFLINE: one probe, then the local cache only (no hub retries), well under 5 s."""
    import huggingface_hub.constants as hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)  # as in a process started without the flag
    monkeypatch.setattr(backbones, "_network_reachable", lambda *a, **k: time.sleep(1.0) or False)  # a 1-s probe
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for load in (lambda: backbones.load_clip("ViT-B-16/openai"), lambda: backbones.load_clip("hf-hub:org/none"),
                 lambda: backbones.load_ssl("vit_base_patch16_224.dino")):
        t0 = time.time()
        with pytest.raises(OfflineModelError, match="network is off") as e:
            load()
        assert time.time() - t0 < 5, f"took {time.time() - t0:.1f} s"
        assert str(tmp_path / "hub") in str(e.value) and "python -c" in str(e.value)
    assert not hub.HF_HUB_OFFLINE and "HF_HUB_OFFLINE" not in os.environ  # the process is not left offline


def _lesson_params(lesson):
    defaults = course.notebook_params(lesson)
    return course.resolve_params(lesson, "smoke", {k: v for k, v in standins.LESSON_PARAMS.items() if k in defaults})


@pytest.mark.parametrize("lesson", course.lessons())
def test_lesson_runs_on_the_real_path(lesson, real_env, tmp_path, monkeypatch):
    """Every lesson, smoke settings, on the stand-in real path (ViT at 224 px, CIFAR-10 with its STL-10 shift,
    sd-turbo's pipeline, timm DINO): it runs to the end and writes a record with a verdict for every claim."""
    params = _lesson_params(lesson)
    monkeypatch.setenv("FMCLS_FIGURES", str(tmp_path / "figures"))  # the kernel's records: not the embedded runs' folder
    t0 = time.time()
    course.run_lesson(lesson, params, tmp_path, progress=False)
    record = json.loads((tmp_path / "figures" / f"{lesson}.json").read_text())
    assert record["params"]["task"] == "cifar10" and record["params"]["backbone"] == params["backbone"]
    assert record["claims"] and all(c.get("verdict") in ("shown", "refuted", "undecided") or c.get("kind") == "identity"
                                    for c in record["claims"].values())
    if lesson == "01_clip_zero_shot":  # the real shift is measured: STL-10 images are resampled on their own
        assert "stl10" in record["metrics"]["zero_shot"]
        assert record["claims"]["zero_shot_effectively_robust"]["test"].startswith("bootstrap over images, each")
    print(f"{lesson} on the stand-in real path: {time.time() - t0:.0f} s")


def test_wise_ft_on_a_task_without_a_shift_domain(real_env, tmp_path, monkeypatch):
    """EuroSAT has no shift that torchvision provides: lesson 05 says so and decides what it can (photo only)."""
    params = course.resolve_params("05_wise_ft", "smoke", {"task": "eurosat",
                                                          "backbone": standins.LESSON_PARAMS["backbone"]})
    monkeypatch.setenv("FMCLS_FIGURES", str(tmp_path / "figures"))
    course.run_lesson("05_wise_ft", params, tmp_path, progress=False)
    record = json.loads((tmp_path / "figures" / "05_wise_ft.json").read_text())
    assert "ood" not in record["metrics"].get("zero_shot", {})
    assert all(c.get("verdict") in ("shown", "refuted", "undecided") or c.get("kind") == "identity"
               for c in record["claims"].values())



def test_local_paths_in_parameters_are_checked_and_made_absolute(tmp_path, monkeypatch):
    """The kernel runs in notebooks/: a path typed relative to the shell's folder must reach it absolute; an
    imagefolder task is accepted when its train/ folder exists, refused with what is missing otherwise."""
    from fmcls_lib.standins import datasets as standin_data
    standin_data.write_imagefolder(tmp_path / "folder", ("cat", "dog"), ("train", "val", "test"), per_class=2)
    (tmp_path / "ckpt.pt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    p = course.resolve_params("01_clip_zero_shot", None, {"task": "imagefolder:folder", "backbone": "ViT-B-32@ckpt.pt"})
    assert p == {"task": f"imagefolder:{tmp_path / 'folder'}", "backbone": f"ViT-B-32@{tmp_path / 'ckpt.pt'}"}
    with pytest.raises(course.ParameterError, match="train"):
        course.resolve_params("01_clip_zero_shot", None, {"task": "imagefolder:nowhere"})


def test_network_probe_trusts_a_proxy_and_respects_offline_mode(monkeypatch):
    import huggingface_hub.constants as hub
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert backbones._network_reachable() is False   # offline mode wins, no probe
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    assert backbones._network_reachable() is True    # a direct probe would fail behind the proxy
