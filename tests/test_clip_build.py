import json
import warnings

import pytest
import torch

from fmcls_lib import backbones, cache, cli
from fmcls_lib.pretrain import clip as pretrain_clip


def test_same_recipe_same_weights():
    r = pretrain_clip.Recipe("fmcls-micro", steps=3, batch_size=32, corpus=100, warmup=2)
    a, _ = pretrain_clip.train(r, progress=False)
    b, _ = pretrain_clip.train(r, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    c, _ = pretrain_clip.train(pretrain_clip.Recipe("fmcls-micro", steps=3, batch_size=32, corpus=100,
                                                    warmup=2, seed=1), progress=False)
    assert not torch.equal(a.state_dict()["logit_scale"] * 0 + a.visual.head.proj.weight,
                           c.visual.head.proj.weight)


def test_micro_builds_once_then_loads_from_cache(micro, monkeypatch):
    assert micro.name == "micro" and len(micro.weights_hash) == 64
    monkeypatch.setattr(pretrain_clip, "build", lambda *a, **k: pytest.fail("rebuilt a cached model"))
    again = backbones.load_clip("micro", progress=False)
    assert again.weights_hash == micro.weights_hash
    x = torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8).numpy()
    torch.testing.assert_close(again.encode_images(x), micro.encode_images(x))


def test_corrupt_cached_model_is_rebuilt(micro):
    meta_path = next((cache.cache_dir() / "models").glob("clip-micro-*.json"))
    path = meta_path.parent / json.loads(meta_path.read_text())["file"]
    path.write_bytes(path.read_bytes()[:-64] + b"\0" * 64)
    rebuilt = backbones.load_clip("micro", progress=False)
    assert rebuilt.weights_hash == micro.weights_hash  # same recipe -> same bytes
    assert cache.file_sha256(path) == micro.weights_hash


def test_micro_is_an_open_clip_model_with_clip_loss_shapes(micro):
    img = micro.encode_images(torch.zeros(2, 32, 32, 3, dtype=torch.uint8).numpy())
    txt = micro.encode_text(["a red star.", "a sketch of a moon."])
    assert img.shape == txt.shape == (2, micro.model.embed_dim if hasattr(micro.model, "embed_dim") else 32)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(2))
    assert type(micro.model).__module__.startswith("open_clip")


def test_shipped_models_are_intact_and_current():
    manifest = backbones._manifest()
    assert cli.main(["check"]) == 0, "shipped models stale or corrupt: run `fmcls build` and commit"
    total = sum((backbones.SHIPPED_DIR / e["file"]).stat().st_size for e in manifest.values())
    assert total <= 25 * 2**20
    assert {"clip-tiny", "generator-tiny", "ssl-tiny-dino"} <= set(backbones.shipped_keys())
    for key in backbones.shipped_keys():
        assert {"sha256", "recipe_hash", "build_seconds", "params", "headline"} <= set(manifest[key]), key


def test_check_reports_a_stale_recipe(monkeypatch, capsys):
    r = pretrain_clip.RECIPES["tiny"]
    monkeypatch.setitem(pretrain_clip.RECIPES, "tiny", pretrain_clip.Recipe(r.model, steps=r.steps + 1))
    assert cli.main(["check"]) == 1
    assert "stale" in capsys.readouterr().out
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        backbones._embedded_weights("tiny")
    assert any("older recipe" in str(x.message) for x in w)
