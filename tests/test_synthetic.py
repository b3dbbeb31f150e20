"""Synthetic data (He et al. 2023): the micro generator, CF, SCE, RF, Real Guidance, frozen BN."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmcls_lib import backbones, finetune, heads, prompts, synthetic, world
from fmcls_lib.pretrain import diffusion
from fmcls_lib.errors import UnknownNameError


def test_micro_generator_count_shape_and_determinism(micro_pipe):
    a = micro_pipe(["a photo of a red circle.", "a star."], num_images_per_prompt=3, num_inference_steps=4,
                   generator=torch.Generator().manual_seed(1)).images
    b = micro_pipe(["a photo of a red circle.", "a star."], num_images_per_prompt=3, num_inference_steps=4,
                   generator=torch.Generator().manual_seed(1)).images
    c = micro_pipe(["a photo of a red circle.", "a star."], num_images_per_prompt=3, num_inference_steps=4,
                   generator=torch.Generator().manual_seed(2)).images
    assert a.shape == (6, world.RES, world.RES, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_img2img_at_zero_strength_returns_the_input(micro_pipe):
    x = world.render_many(world.pretrain_scenes(2))
    out = micro_pipe.img2img(["a circle.", "a star."], x, strength=0.0).images
    assert np.array_equal(out, x)
    y = micro_pipe.img2img(["a circle.", "a star."], x, strength=0.6, num_inference_steps=5,
                           generator=torch.Generator().manual_seed(0)).images
    assert y.shape == x.shape and not np.array_equal(y, x)
    with pytest.raises(ValueError, match="strength"):
        micro_pipe.img2img("a circle.", x[:1], strength=1.5)
    with pytest.raises(ValueError, match="one image per prompt"):
        micro_pipe.img2img(["a circle."], x, strength=0.5)


def test_generator_build_is_deterministic_and_loads(tmp_path):
    m1 = diffusion.build("micro", tmp_path / "a", progress=False)
    m2 = diffusion.build("micro", tmp_path / "b", progress=False)
    assert m1["sha256"] == m2["sha256"] and m1["recipe_hash"] == diffusion.recipe_hash(diffusion.RECIPES["micro"])


def test_unknown_or_offline_generator_fails_clearly(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="accepted"):
        backbones.load_generator("nano")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache, whatever this machine has downloaded
    with pytest.raises(backbones.OfflineModelError, match="local Hugging Face cache"):
        backbones.load_generator("stabilityai/sd-turbo", device="cpu")


def test_clip_filter_keeps_exactly_the_images_above_one_over_c_with_fallback():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(40, 4, generator=g) * 2
    y = torch.arange(40) % 4
    zs[y == 3, 3] = -10  # class 3: every image below 1/C
    keep = synthetic.clip_filter(zs, y)
    p = zs.softmax(1)[torch.arange(40), y]
    assert torch.equal(keep, p > 0.25) and not keep[y == 3].any()
    keep2 = synthetic.clip_filter(zs, y, min_per_class=2)
    assert keep2[y == 3].sum() == 2
    top2 = torch.nonzero(y == 3).flatten()[p[y == 3].topk(2).indices]
    assert keep2[top2].all()
    assert torch.equal(keep2[y != 3], keep[y != 3]) or (keep2[y != 3].sum() >= keep[y != 3].sum())


def test_sce_with_t_to_zero_and_sl_one_is_ce_on_the_argmax_labels():
    g = torch.Generator().manual_seed(0)
    logits, zs = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    y = torch.randint(0, 5, (16,), generator=g)
    got = synthetic.soft_target_loss(logits, zs, y, sl=1.0, T=1e-4)
    torch.testing.assert_close(got, F.cross_entropy(logits, zs.argmax(1)))
    torch.testing.assert_close(synthetic.soft_target_loss(logits, zs, y, sl=0.0), F.cross_entropy(logits, y))


def test_real_filter_removes_an_image_next_to_another_class_shot():
    shots = F.normalize(torch.eye(3, 8), dim=-1)
    y_shots = torch.tensor([0, 1, 2])
    syn = F.normalize(torch.stack([shots[0] + 0.1 * shots[1], shots[1] + 0.05, shots[2]]), dim=-1)
    keep = synthetic.real_filter(syn, torch.tensor([0, 0, 2]), shots, y_shots)  # image 1 sits next to class 1
    assert keep.tolist() == [True, False, True]


def test_prompts_b_and_le():
    p, y = synthetic.basic_prompts(["circle", "arrow"], per_class=2)
    assert p == ["a photo of a circle."] * 2 + ["a photo of an arrow."] * 2 and y.tolist() == [0, 0, 1, 1]
    p, y = synthetic.enhanced_prompts(["circle", "arrow"], per_class=5, seed=0)
    assert len(p) == 10 and all("circle" in q for q in p[:5]) and all("arrow" in q for q in p[5:])
    assert len(set(p[:5])) > 1 and " a arrow" not in " ".join(p)


def test_frozen_bn_leaves_running_statistics_bit_identical(micro):
    W = heads.zero_shot_head(micro, world.SHAPES, prompts.PHOTO)
    x = micro.prepare(world.render_many(world.pretrain_scenes(48)))
    y = torch.arange(48) % 12

    def bn_stats(m):
        return [b.clone() for n, b in m.named_buffers() if "running" in n]

    for freeze in (True, False):
        model = finetune.from_zero_shot(micro, W)
        before = bn_stats(model)
        finetune.finetune(model, finetune.Recipe(epochs=1, batch_size=16, freeze_bn=freeze), x, y, x[:12], y[:12],
                          progress=False)
        same = all(torch.equal(a, b) for a, b in zip(before, bn_stats(model)))
        assert same is freeze


def test_train_fraction_trains_only_the_last_parameter_tensors(micro):
    W = heads.zero_shot_head(micro, world.SHAPES, prompts.PHOTO)
    x = micro.prepare(world.render_many(world.pretrain_scenes(32)))
    y = torch.arange(32) % 12
    model = finetune.from_zero_shot(micro, W)
    before = [p.detach().clone() for p in model.image_encoder.parameters()]
    r = finetune.Recipe(epochs=1, batch_size=16, train_fraction=0.25, lr=1e-2, warmup_steps=1)
    n = finetune.trainable_parameters(model, r)
    finetune.finetune(model, r, x, y, x[:12], y[:12], progress=False)
    changed = [not torch.equal(a, b) for a, b in zip(before, model.image_encoder.parameters())]
    k = len(changed) - int(np.ceil(0.25 * len(changed)))
    assert not any(changed[:k]) and any(changed[k:])
    assert 0 < n < sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="train_fraction"):
        finetune.Recipe(train_fraction=0.0)


def test_train_head_modes_and_selection(micro_splits):
    f, y = micro_splits["train", "photo"]
    fv, yv = micro_splits["val", "photo"]
    W = F.normalize(torch.randn(12, f.shape[1], generator=torch.Generator().manual_seed(0)), dim=-1)
    zs = 10 * f @ W.T
    for mode in ("syn", "real", "mix", "syn_real", "real_syn"):
        head, fit = synthetic.train_head(W, 10.0, syn=(f, y, zs), real=(f[:24], y[:24]), val=(fv, yv), mode=mode,
                                         sl=0.5, epochs=3)
        assert fit.val_accuracy == max(h["val"] for h in fit.history[-3:]) or mode in ("syn_real", "real_syn")
        assert heads.accuracy(head(fv), yv) == pytest.approx(fit.val_accuracy)
    with pytest.raises(UnknownNameError, match="accepted"):
        synthetic.train_head(W, 10.0, syn=(f, y, zs), val=(fv, yv), mode="both")


def test_generate_is_cached_and_holdout_is_stratified(micro_pipe):
    p, y = synthetic.basic_prompts(["circle", "star"])
    a, ya = synthetic.generate(micro_pipe, p, y, per_prompt=3, num_inference_steps=3, progress=False)
    b, _ = synthetic.generate(micro_pipe, p, y, per_prompt=3, num_inference_steps=3, progress=False)
    assert a.shape[0] == 6 and ya.tolist() == [0, 0, 0, 1, 1, 1] and np.array_equal(a, b)
    tr, ho = synthetic.split_holdout(len(ya), ya, frac=0.34)
    assert sorted(np.r_[tr, ho].tolist()) == list(range(6)) and set(ya[ho]) == {0, 1}


def test_recognition_report_and_pipeline_info(micro_pipe, micro):
    assert micro_pipe.id.startswith("generator-micro@") and micro_pipe.info["recipe"]["steps"] == 12
    rep = synthetic.recognition_report(micro_pipe, micro, per_class=1, num_inference_steps=2)
    for vocab in ("class_names", "caption_vocabulary"):
        assert set(rep[vocab]["probe_per_class"]) == set(world.SHAPES)
        assert rep[vocab]["probe"] == pytest.approx(np.mean(list(rep[vocab]["probe_per_class"].values())))
    assert set(rep["zero_shot_by_domain_word"]) == set(world.DOMAINS)


def test_real_guidance_at_zero_strength_returns_the_shots(micro_pipe):
    x = world.render_many(world.pretrain_scenes(3))
    imgs, y = synthetic.real_guidance(micro_pipe, x, np.array([0, 1, 2]), world.SHAPES, per_image=2, strength=0.0,
                                      progress=False)
    assert np.array_equal(imgs, np.repeat(x, 2, 0)) and y.tolist() == [0, 0, 1, 1, 2, 2]


def test_recorded_recognition_report_only_where_the_settings_match(micro_pipe, micro, monkeypatch):
    from fmcls_lib import data
    rep = synthetic.recognition_report(micro_pipe, micro, per_class=2, num_inference_steps=2)
    c = synthetic.recognised(rep, "caption_vocabulary")
    assert c.shape == (2 * len(world.SHAPES),) and c.mean() == pytest.approx(rep["caption_vocabulary"]["probe"])
    monkeypatch.setattr(micro_pipe, "info", {**micro_pipe.info, "headline": {**rep, "probe_marker": 1}})
    monkeypatch.setattr(data, "_split_size", "full")
    got = synthetic.recognition_report(micro_pipe, micro, per_class=2, num_inference_steps=2, recorded=True)
    assert got["recorded_at_build"] and got["probe_marker"] == 1
    monkeypatch.setattr(data, "_split_size", "smoke")  # the recorded probe saw the full validation split
    assert "recorded_at_build" not in synthetic.recognition_report(micro_pipe, micro, per_class=2, num_inference_steps=2,
                                                                   recorded=True)


def test_generate_batch_layout_is_in_the_cache_key(micro_pipe):
    p, y = synthetic.basic_prompts(["circle", "star", "heart"])
    a, _ = synthetic.generate(micro_pipe, p, y, per_prompt=2, num_inference_steps=2, progress=False, batch_size=4)
    b, _ = synthetic.generate(micro_pipe, p, y, per_prompt=2, num_inference_steps=2, progress=False)
    assert a.shape == b.shape == (6, world.RES, world.RES, 3)
    key = synthetic.generate_key(micro_pipe, p, 2, 4.0, 2, 0, 4)
    assert key["batch"] == 4 and synthetic.generate_key(micro_pipe, p, 2, 4.0, 2, 0)["batch"] == synthetic.GEN_BATCH


def test_zero_shot_study_returns_per_image_correctness_per_seed(micro_splits):
    S = micro_splits
    f, y = S["train", "photo"]
    W = F.normalize(torch.randn(12, f.shape[1], generator=torch.Generator().manual_seed(0)), dim=-1)
    s = {"f": f, "y": y, "zs": 10 * f @ W.T}
    study = synthetic.zero_shot_study(S, W, 10.0, {"b": s, "le": s}, world.DOMAINS, epochs=2, seeds=2)
    acc, info, correct = study.accuracy, study.info, study.correct
    n = len(S["test", "photo"][1])
    assert correct["zero_shot"]["photo"].shape == (1, n) and correct["le_cf_sce"]["sketch"].shape == (2, n)
    assert acc["b_ce"]["photo"] == pytest.approx(correct["b_ce"]["photo"].mean())
    shifts = [d for d in world.DOMAINS if d != "photo"]
    assert acc["b_ce"]["ood"] == pytest.approx(np.mean([correct["b_ce"][d].mean() for d in shifts]))
    assert set(info["val"]) == {"zero_shot", *synthetic.ZERO_SHOT_VARIANTS} and len(info["b"]["ce_best_epoch"]) == 2
    assert synthetic.per_seed(correct["b_ce"])["photo"].shape == (2,)
