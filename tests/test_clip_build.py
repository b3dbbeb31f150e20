import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import fmcls_lib as fm
from fmcls_lib import backbones, cli, models, pretrain
from fmcls_lib.errors import MissingModelError
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


def test_micro_loads_from_the_cache_without_training(micro, monkeypatch):
    assert micro.name == "micro" and len(micro.weights_hash) == 64
    monkeypatch.setattr(pretrain_clip, "build", lambda *a, **k: pytest.fail("a loader trained a model"))
    again = backbones.load_clip("micro")
    assert again.weights_hash == micro.weights_hash
    x = torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8).numpy()
    torch.testing.assert_close(again.encode_images(x), micro.encode_images(x))


def test_corrupt_cached_model_is_one_clear_error_until_fmcls_build(micro, monkeypatch):
    path = models.cached("clip", "micro")[0]
    good = path.read_bytes()
    path.write_bytes(good[:-64] + b"\0" * 64)
    monkeypatch.setattr(pretrain_clip, "train", lambda *a, **k: pytest.fail("a loader trained a model"))
    with pytest.raises(MissingModelError, match=r"fmcls build --models clip-micro .*takes minutes"):
        backbones.load_clip("micro")
    assert models.list_models()["clip"][-1] == {"name": "micro", "key": "clip-micro", "shipped": False,
                                                 "cached": False}
    monkeypatch.undo()
    assert cli.main(["build", "--models", "clip-micro"]) == 0  # into the cache: same recipe -> same bytes
    assert path.read_bytes() == good and backbones.load_clip("micro").weights_hash == micro.weights_hash


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_damaged_shipped_model_names_the_build_command_and_its_time(damage, tmp_path, monkeypatch):
    import shutil
    shutil.copy(models.MANIFEST, tmp_path / "manifest.json")
    if damage == "corrupt":
        (tmp_path / "clip-tiny.safetensors").write_bytes((models.SHIPPED_DIR / "clip-tiny.safetensors").read_bytes()[:-8])
    monkeypatch.setattr(models, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(models, "MANIFEST", tmp_path / "manifest.json")
    minutes = round(models.manifest()["clip-tiny"]["build_seconds"] / 60)
    with pytest.raises(MissingModelError, match=rf"missing or corrupt.*fmcls build --models clip-tiny .*about {minutes} min"):
        backbones.load_clip("tiny")
    monkeypatch.setenv("FMCLS_CACHE", str(tmp_path / "empty"))  # a model neither shipped nor built
    with pytest.raises(fm.FmclsError, match="clip-micro is not shipped and not built.*fmcls build --models clip-micro"):
        backbones.load_clip("micro")


def test_registry_recipes_hash_as_the_manifest_and_the_builders_record():
    manifest = models.manifest()
    for key in models.shipped_keys():
        kind, name = models.split_key(key)
        assert models.recipe_hash(kind, models.recipes(kind)[name]) == manifest[key]["recipe_hash"], key
        assert models.recipes(kind)[name] == manifest[key]["recipe"], key
    # the test models' hashes as the builders computed them before the registry (their cached builds stay valid)
    assert {k: models.recipe_hash(k, models.recipes(k)[n]) for k, n in
            [("clip", "micro"), ("generator", "micro"), ("ssl", "micro-dino")]} == \
        {"clip": "3ed776be95aa74ab", "generator": "18ea7b3fd059cc1e", "ssl": "98aef56212c80a69"}
    for kind in models.KINDS:
        mod = pretrain.module(kind)
        assert {n: mod.recipe_hash(r) for n, r in mod.RECIPES.items()} == \
            {n: models.recipe_hash(kind, r) for n, r in models.recipes(kind).items()}


def test_loaders_never_import_the_builders():
    code = ("import sys, fmcls_lib as fm; fm.backbones.load_clip('tiny'); fm.backbones.load_ssl('tiny-dino'); "
            "fm.backbones.load_generator('tiny'); fm.evaluate, fm.course, fm.synthetic, fm.cafo; "
            "assert not [m for m in sys.modules if m.startswith('fmcls_lib.pretrain')], sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(fm.__file__).parent.parent)


def test_list_models_names_every_embedded_model():
    listed = backbones.list_models()
    assert {m["key"] for ms in listed.values() for m in ms} == {f"{k}-{n}" for k in models.KINDS
                                                                 for n in models.recipes(k)}
    assert all(m["shipped"] == (m["key"] in models.shipped_keys()) for ms in listed.values() for m in ms)


def test_micro_is_an_open_clip_model_with_clip_loss_shapes(micro):
    img = micro.encode_images(torch.zeros(2, 32, 32, 3, dtype=torch.uint8).numpy())
    txt = micro.encode_text(["a red star.", "a sketch of a moon."])
    assert img.shape == txt.shape == (2, micro.model.embed_dim if hasattr(micro.model, "embed_dim") else 32)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(2))
    assert type(micro.model).__module__.startswith("open_clip")


def test_shipped_models_are_intact_and_current():
    manifest = models.manifest()
    assert cli.main(["check"]) == 0, "shipped models stale or corrupt: run `fmcls build` and commit"
    total = sum((models.SHIPPED_DIR / e["file"]).stat().st_size for e in manifest.values())
    assert total <= 25 * 2**20
    assert {"clip-tiny", "generator-tiny", "ssl-tiny-dino"} <= set(models.shipped_keys())
    for key in models.shipped_keys():
        assert {"sha256", "recipe_hash", "build_seconds", "params", "headline"} <= set(manifest[key]), key


def test_check_reports_a_stale_recipe(monkeypatch, capsys):
    r = models.recipes("clip")["tiny"]
    monkeypatch.setitem(models.recipes("clip"), "tiny", {**r, "steps": r["steps"] + 1})
    assert cli.main(["check"]) == 1
    assert "stale" in capsys.readouterr().out
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        models.weights("clip", "tiny")
    assert any("older recipe" in str(x.message) for x in w)


def test_build_curve_follows_the_curriculum_stages():
    """tiny-dino continues tiny-dino-base: its monitor curve comes after the base's, steps counted on."""
    from fmcls_lib import evaluate, models
    rows = evaluate.build_curve("ssl", "tiny-dino")
    base = models.recipes("ssl")["tiny-dino-base"]
    stages = [r["model"] for r in rows]
    assert stages[0] == "tiny-dino-base" and stages[-1] == "tiny-dino" and stages == sorted(stages, key=stages.index)
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    assert min(r["step"] for r in rows if r["model"] == "tiny-dino") == base["steps"]
    first = models.manifest()["ssl-tiny-dino-base"]["history"]
    assert [r["knn_shapes_val"] for r in rows[:len(first)]] == [h["knn_shapes_val"] for h in first]
