"""The real generator path: a tiny random diffusers Stable-Diffusion pipeline (the real classes, 64 px) in a Hugging
Face cache layout, reached through ``load_generator`` as a student's cached ``stabilityai/sd-turbo`` would be."""
import math
import shutil
import sys
import time
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from fmcls_lib import backbones, synthetic
from fmcls_lib.errors import OfflineModelError
from fmcls_lib.standins import models as standin_models

SD_LIKE = "fmcls-tests/stable-diffusion-tiny"  # not a turbo name: the SD 1.x / 2.x settings row


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    standin_models.write_sd_turbo(root)
    standin_models.write_sd_turbo(root, repo_id=SD_LIKE)
    return root


@pytest.fixture()
def in_hub(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return hub


@pytest.fixture(scope="module")
def turbo(hub):
    with mock.patch.dict("os.environ", {"HF_HUB_CACHE": str(hub)}):
        return backbones.load_generator("stabilityai/sd-turbo", device="cpu", max_batch=4)


def spy_calls(pipe_obj):
    """Patch the class of a diffusers pipeline object so every call is recorded: (images made, kwargs with the
    prompts)."""
    cls, orig, calls = type(pipe_obj), type(pipe_obj).__call__, []

    def spy(self, prompt, **kw):
        calls.append((len(prompt) * kw.get("num_images_per_prompt", 1), {**kw, "prompt": list(prompt)}))
        return orig(self, prompt, **kw)
    return mock.patch.object(cls, "__call__", spy), calls


def test_generation_through_load_generator_is_chunked_and_seeded(turbo):
    assert turbo.resolution == 64 and turbo.id.startswith("stabilityai/sd-turbo@")
    patch, calls = spy_calls(turbo.pipe)
    with patch:
        imgs, y = synthetic.generate(turbo, ["a photo of a cat.", "a photo of a dog.", "a photo of a ship."], [0, 1, 2],
                                     per_prompt=3, guidance_scale=0.0, num_inference_steps=1, seed=5, progress=False)
    assert imgs.shape == (9, 64, 64, 3) and imgs.dtype == np.uint8 and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [n for n, _ in calls] == [4, 4, 1]  # generate's batch is the pipeline's bound: ceil(9 / 4) calls
    with patch:  # a direct call with more images per prompt than the bound: split per prompt, order kept
        calls.clear()
        a = turbo(["a cat.", "a dog."], num_images_per_prompt=6, generator=torch.Generator().manual_seed(0)).images
        b = turbo(["a cat.", "a dog."], num_images_per_prompt=6, generator=torch.Generator().manual_seed(0)).images
    assert a.shape == (12, 64, 64, 3) and np.array_equal(a, b)
    assert [n for n, _ in calls] == [4, 2, 4, 2] * 2
    assert turbo.chunks(5, 3) == [(0, 1, 3), (1, 2, 3), (2, 3, 3), (3, 4, 3), (4, 5, 3)]
    with pytest.raises(ValueError, match="max_batch"):
        backbones._DiffusersPipeline(turbo.pipe, "x", max_batch=0)


def test_settings_per_model_are_used_when_left_open(in_hub, turbo):
    tiny = synthetic.GENERATOR_SETTINGS["tiny"]
    assert synthetic.generator_settings("tiny") == {**tiny, "settings": "tiny"}
    for name in ("stabilityai/sd-turbo", "stabilityai/sdxl-turbo"):
        s = synthetic.generator_settings(name)
        assert s["guidance_scale"] == 0.0 and 1 <= s["num_inference_steps"] <= 4
        # Real Guidance runs int(rg_steps * strength) steps: 1-4 at every strength of the paper's schedule
        assert all(1 <= int(s["rg_steps"] * st) <= 4 for st in synthetic.RG_STRENGTH.values())
    for name in ("runwayml/stable-diffusion-v1-5", "stabilityai/stable-diffusion-2-1"):
        s = synthetic.generator_settings(name)
        assert s["guidance_scale"] == 7.5 and 25 <= s["num_inference_steps"] <= 50
    # a lesson's defaults (the tiny row) become the model's settings; a value set on purpose stays
    got = synthetic.sampling_settings("stabilityai/sd-turbo")
    assert (got["guidance_scale"], got["num_inference_steps"], got["settings"]) == (0.0, 1, "turbo")
    assert synthetic.sampling_settings("stabilityai/sd-turbo", guidance_scale=2.0, num_inference_steps=3)[
        "guidance_scale"] == 2.0
    assert {k: v for k, v in synthetic.sampling_settings("tiny").items() if k != "settings"} == tiny
    patch, calls = spy_calls(turbo.pipe)
    with patch:
        turbo(["a cat."])
    assert (calls[0][1]["guidance_scale"], calls[0][1]["num_inference_steps"]) == (0.0, 1)
    sd = backbones.load_generator(SD_LIKE, device="cpu")
    patch, calls = spy_calls(sd.pipe)
    with patch:
        sd(["a cat."])
    assert (calls[0][1]["guidance_scale"], calls[0][1]["num_inference_steps"]) == (7.5, 25)
    assert sd.max_batch == 8  # the default bound


def test_real_guidance_runs_at_the_generators_resolution(turbo):
    shots = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)  # CIFAR-sized shots
    turbo.img2img(["a cat."], shots[:1], strength=0.5)  # builds the img2img pipeline to spy on
    patch, calls = spy_calls(turbo._i2i)
    with patch:
        out, y = synthetic.real_guidance(turbo, [Image.fromarray(s) for s in shots], [0, 1, 0], ["cat", "dog"],
                                         per_image=3, strength=0.15, guidance_scale=0.0, num_inference_steps=4,
                                         progress=False)
    assert out.shape == (9, 64, 64, 3) and y.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert all(im.size == (64, 64) for _, kw in calls for im in kw["image"])
    assert all(n <= turbo.max_batch for n, _ in calls) and sum(n for n, _ in calls) == 9
    # strength 0.15 on 4 steps would be int(0.6) = 0 denoising steps: the schedule is lengthened to ceil(1 / 0.15)
    assert {kw["num_inference_steps"] for _, kw in calls} == {math.ceil(1 / 0.15)}
    # one (prompt, image) pair per output, in the shots' order
    assert {kw["num_images_per_prompt"] for _, kw in calls} == {1}
    assert [p for _, kw in calls for p in kw["prompt"]] == \
        ["a photo of a cat."] * 3 + ["a photo of a dog."] * 3 + ["a photo of a cat."] * 3


def test_img2img_pairs_each_image_with_its_own_prompt(turbo):
    turbo.img2img(["a cat."], np.zeros((1, 32, 32, 3), np.uint8), strength=0.5)
    cls, orig, seen = type(turbo._i2i), type(turbo._i2i).__call__, []

    def spy(self, prompt, image=None, **kw):
        seen.extend(zip(prompt, [np.asarray(im).mean() for im in image]))
        return orig(self, prompt, image=image, **kw)
    dark, bright = np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)
    with mock.patch.object(cls, "__call__", spy):
        turbo.img2img(["dark", "bright"], np.stack([dark, bright]), strength=0.5, num_images_per_prompt=3)
    assert seen == [("dark", 0.0)] * 3 + [("bright", 255.0)] * 3


def test_missing_transformers_says_pip_install(in_hub, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails, as when not installed
    with pytest.raises(ImportError, match="pip install transformers"):
        backbones.load_generator("stabilityai/sd-turbo", device="cpu")


def test_missing_folder_and_non_pipeline_folder_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        backbones.load_generator(str(tmp_path / "no-such-sd"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        backbones.load_generator(str(tmp_path / "empty"), device="cpu")


def test_a_local_pipeline_folder_loads_and_a_broken_one_reports_its_own_cause(hub, tmp_path):
    snap = standin_models.snapshot(hub, "stabilityai/sd-turbo")
    pipe = backbones.load_generator(str(snap), device="cpu")
    name, digest = pipe.id.split("@")
    assert pipe.resolution == 64 and name == str(snap) and len(digest) >= 8   # a local folder: named by its files
    broken = tmp_path / "broken"
    shutil.copytree(snap, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(Exception) as e:
        backbones.load_generator(str(broken), device="cpu")
    assert not isinstance(e.value, OfflineModelError) and "network" not in str(e.value)


def test_a_model_not_in_the_cache_fails_offline_within_5_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(OfflineModelError, match="not in the local Hugging Face cache") as e:
        backbones.load_generator("stabilityai/sd-turbo", device="cpu")
    assert time.perf_counter() - t0 < 5.0
    assert str(tmp_path / "empty-hub") in str(e.value) and "from_pretrained('stabilityai/sd-turbo')" in str(e.value)


def test_without_the_offline_flag_a_missing_model_fails_after_one_probe(tmp_path, monkeypatch):
    """No network and no HF_HUB_OFFLINE (a student's laptop on a train): one reachability probe, no hub retries."""
    import huggingface_hub.constants as hub_constants
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(backbones, "_network_reachable", lambda *a, **k: time.sleep(1.0) or False)  # a 1-s probe
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(OfflineModelError, match="network is off"):
        backbones.load_generator("stabilityai/sd-turbo", device="cpu")
    assert time.perf_counter() - t0 < 5.0 and not hub_constants.HF_HUB_OFFLINE


def test_a_cached_model_loads_without_the_offline_flag_and_without_network(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbones, "_network_reachable", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    t0 = time.perf_counter()
    pipe = backbones.load_generator("stabilityai/sd-turbo", device="cpu")
    assert pipe.resolution == 64 and time.perf_counter() - t0 < 30
