"""CaFo (Zhang et al. 2023): fusion, identities with zero-shot and Tip-Adapter, expansion, DINO build."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmcls_lib import backbones, cafo, features, heads, prompts, tip_adapter, world
from fmcls_lib.pretrain import dino
from fmcls_lib.errors import UnknownNameError


def _toy(seed=0, n=30, c=5, d=16):
    g = torch.Generator().manual_seed(seed)
    keys = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    y = torch.arange(n) % c
    f = F.normalize(torch.randn(20, d, generator=g), dim=-1)
    W = F.normalize(torch.randn(c, d, generator=g), dim=-1)
    return keys, y, f, W


def test_fusion_weights_sum_to_one_and_favour_the_cache_that_matches_zero_shot():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(50, 6, generator=g)
    like = zs + 0.1 * torch.randn(50, 6, generator=g)
    unlike = torch.randn(50, 6, generator=g)
    w = cafo.fusion_weights(zs, [unlike, like])
    torch.testing.assert_close(w.sum(1), torch.ones(50))
    assert (w[:, 1] > w[:, 0]).float().mean() > 0.9


def test_alpha_zero_is_zero_shot():
    keys, y, f, W = _toy()
    model = cafo.CaFo(W, [tip_adapter.build_cache(keys, y, 5)] * 2, alpha=0.0, beta=3.0, scale=20.0)
    torch.testing.assert_close(model.logits([f, f]), 20.0 * f @ W.T)


def test_one_cache_with_the_slide_fusion_is_tip_adapter():
    keys, y, f, W = _toy()
    cache = tip_adapter.build_cache(keys, y, 5)
    model = cafo.CaFo(W, [cache], alpha=1.7, beta=4.0, fusion="slide", scale=20.0)
    torch.testing.assert_close(model.logits([f]), tip_adapter.logits(f, cache, W, 1.7, 4.0, scale=20.0))
    # the official fusion z-scores the one cache: Tip-Adapter's cache logits, standardised per row
    zs, (p,) = model.parts([f])
    torch.testing.assert_close(cafo.logits(zs, [p], 1.7), zs + 1.7 * (p - p.mean(1, keepdim=True)) / p.std(1, keepdim=True))


def test_fusion_variants_match_their_definitions():
    g = torch.Generator().manual_seed(1)
    zs, a, b = (torch.randn(8, 4, generator=g) for _ in range(3))
    z = cafo.zscore
    torch.testing.assert_close(cafo.fuse(zs, [a, b], "average"), (z(a) + z(b)) / 2)
    torch.testing.assert_close(cafo.fuse(zs, [a, b], "max"), torch.maximum(z(a), z(b)))
    w = torch.softmax(torch.stack([(z(a) * z(a)).sum(1), (z(b) * z(a)).sum(1)], 1), 1)
    torch.testing.assert_close(cafo.fuse(zs, [a, b], "clip_based"), w[:, :1] * z(a) + w[:, 1:] * z(b))
    with pytest.raises(UnknownNameError, match="accepted"):
        cafo.fuse(zs, [a, b], "median")


def test_search_picks_the_best_validation_pair():
    keys, y, f, W = _toy()
    yv = torch.arange(20) % 5
    model = cafo.CaFo(W, [tip_adapter.build_cache(keys, y, 5)] * 2, 1.0, 1.0, scale=20.0)
    betas, alphas = torch.tensor([0.5, 2.0, 6.0]), torch.tensor([0.0, 0.5, 1.0, 4.0])
    cafo.search(model, [f, f], yv, betas, alphas)
    brute = max(heads.accuracy(cafo.CaFo(W, model.caches, float(a), float(b), scale=20.0).logits([f, f]), yv)
                for b in betas for a in alphas)
    assert model.val_accuracy == pytest.approx(brute)
    assert heads.accuracy(model.logits([f, f]), yv) == pytest.approx(brute)


def test_generated_views_add_exactly_k_prime_labelled_images_per_class():
    """N-way K-shot -> N-way (K + K')-shot: the first ``k_prime`` generated images of every class join the shots."""
    from fmcls_lib import data
    b, *_ = _toy_bank()
    gen_labels = np.repeat(np.arange(4), 3)  # the bank holds k_prime_max = 3 per class, class by class
    gviews = torch.arange(2 * 12 * 16, dtype=torch.float32).view(2, 12, 16)
    b = cafo.Bank(b.S, {k: v.views for k, v in b.views.items()}, {"clip": gviews, "dino": None},
                  np.zeros((12, 32, 32, 3), np.uint8), gen_labels, b.y_train, 3)
    v, y = cafo._expanded_views(b, "clip", 2, 2, seed=0)
    shots = data.few_shot(b.y_train.numpy(), 2, 0)
    assert v.shape == (2, len(shots) + 4 * 2, 16) and torch.equal(v[:, :len(shots)], b.train_views("clip", shots))
    assert np.bincount(y[len(shots):].numpy()).tolist() == [2] * 4
    assert torch.equal(v[:, len(shots):], gviews[:, [i for i in range(12) if i % 3 < 2]])
    with pytest.raises(ValueError, match="holds 3 generated images per class"):
        cafo._expanded_views(b, "clip", 2, 4, seed=0)


def test_cafo_fit_end_to_end_on_micro_models(micro, micro_dino, micro_splits):
    from fmcls_lib import data
    W = heads.zero_shot_head(micro, world.SHAPES, prompts.PHOTO)
    tr, va = data.load("world/shapes", "train", "photo"), data.load("world/shapes", "val", "photo")
    idx = data.few_shot(tr.labels, 2, 0)
    views = [features.image_features(bb, tr, progress=False)[idx] for bb in (micro, micro_dino)]
    val = [features.image_features(bb, va, progress=False) for bb in (micro, micro_dino)]
    grid = (torch.tensor([1.0, 5.0]), torch.tensor([0.0, 1.0, 3.0]))
    m = cafo.fit(views, tr.labels[idx], W, val, va.labels, finetune=True, epochs=2, grid=grid,
                 scale=heads.logit_scale(micro))
    assert m.fit.epochs == 2 and len(m.keys) == 2 and m.keys[1].shape[1] == val[1].shape[1]
    assert m.val_accuracy == pytest.approx(cafo.accuracy_of(m, val, va.labels))


def test_dino_build_is_deterministic(tmp_path):
    a = dino.build("micro-dino", tmp_path / "a", progress=False)
    b = dino.build("micro-dino", tmp_path / "b", progress=False)
    assert a["sha256"] == b["sha256"] and a["history"][-1]["knn_shapes_val"] >= 0


def test_dino_loss_is_the_cross_entropy_over_different_views():
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(4, 7, generator=g) for _ in range(3)]
    t = [torch.randn(4, 7, generator=g) for _ in range(2)]
    c = torch.randn(7, generator=g)
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]
    want = sum(-(F.softmax((t[i] - c) / 0.04, -1) * F.log_softmax(s[j] / 0.1, -1)).sum(-1).mean()
               for i, j in pairs) / 4
    torch.testing.assert_close(dino.dino_loss(s, t, c, 0.1, 0.04), want)


def test_ssl_backbone_features_and_offline_error(micro_dino):
    x = world.render_many(world.pretrain_scenes(3))
    f = micro_dino.encode_images(x)
    assert f.shape[0] == 3 and torch.allclose(f.norm(dim=-1), torch.ones(3))
    assert micro_dino.id.startswith("ssl:micro-dino@")
    with pytest.raises(backbones.OfflineModelError, match="local Hugging Face cache"):
        backbones.load_ssl("vit_small_patch16_224.dino", device="cpu")
    with pytest.raises(KeyError, match="accepted"):
        backbones.load_ssl("not_a_model")


def test_descriptions_head_and_real_path_json(micro, tmp_path):
    d = prompts.descriptions("world/shapes")
    W = heads.description_head(micro, world.SHAPES, d)
    assert W.shape[0] == 12 and torch.allclose(W.norm(dim=-1), torch.ones(12))
    p = tmp_path / "cupl.json"
    p.write_text('{"circle": ["a round thing."]}')
    assert prompts.load_descriptions(p) == {"circle": ("a round thing.",)}
    p.write_text('{"circle": []}')
    with pytest.raises(ValueError, match="expected"):
        prompts.load_descriptions(p)
    with pytest.raises(KeyError, match="accepted"):
        heads.description_head(micro, ["circle", "blob"], d)


def test_a_dino_only_cache_still_takes_zero_shot_from_clip():
    keys, y, f, W = _toy()
    g = torch.Generator().manual_seed(5)
    fd, kd = F.normalize(torch.randn(20, 8, generator=g), dim=-1), F.normalize(torch.randn(30, 8, generator=g), dim=-1)
    m = cafo.fit([keys, kd], y, W, [f, fd], torch.arange(20) % 5, sources=[1],
                 grid=(torch.tensor([2.0]), torch.tensor([0.0, 1.0])), scale=20.0)
    zs, (p,) = m.parts([f, fd])
    torch.testing.assert_close(zs, 20.0 * f @ W.T)
    torch.testing.assert_close(p, cafo.cache_logits(fd, kd, m.caches[0].values, m.beta))


def test_recorded_headline_is_the_build_record_only_where_it_applies(micro, micro_dino, monkeypatch):
    from fmcls_lib import evaluate
    rec = {"task": "world/shapes", "split": "val", "ssl": {"knn": 0.5}, "clip": {"knn": 0.9}}
    monkeypatch.setattr(micro_dino, "info", {"headline": rec})
    assert evaluate.ssl_headline(micro_dino, recorded=True) == {**rec, "recorded_at_build": True}
    computed = evaluate.ssl_headline(micro_dino, clip_name="micro", shots=2, seeds=1, recorded=True)
    assert "recorded_at_build" not in computed and 0 <= computed["ssl"]["knn"] <= 1


def _toy_bank():
    g = torch.Generator().manual_seed(0)
    c, n = 4, 24
    y_train = torch.arange(n) % c
    split = lambda d, m: (F.normalize(torch.randn(m, d, generator=g), dim=-1), torch.arange(m) % c)  # noqa: E731
    S = {e: {("val", "photo"): split(d, 16), ("test", "photo"): split(d, 20), ("test", "sketch"): split(d, 20)}
         for e, d in (("clip", 16), ("dino", 8))}
    views = {e: F.normalize(torch.randn(2, n, d, generator=g), dim=-1) for e, d in (("clip", 16), ("dino", 8))}
    b = cafo.Bank(S, views, {"clip": None, "dino": None}, np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64),
                  y_train, 0)
    W = F.normalize(torch.randn(c, 16, generator=g), dim=-1)
    return b, W, S, views, y_train


def test_against_tip_adapter_reproduces_each_method_run_on_its_own():
    from fmcls_lib import data
    b, W, S, views, y_train = _toy_bank()
    grid = (torch.tensor([1.0, 4.0]), torch.tensor([0.0, 1.0]))
    res = cafo.against_tip_adapter(b, W, W, [1, 2], 0, grid=grid, scale=20.0, epochs=2, seeds=2)
    curves, secs, dom, right = res.curves, res.seconds, res.by_domain, res.correct
    f, y = S["clip"]["test", "photo"]
    for k in (1, 2):
        for seed in range(2):
            idx = torch.as_tensor(data.few_shot(y_train.numpy(), k, seed))
            tip = tip_adapter.fit(views["clip"][:, idx], y_train[idx], W, *S["clip"]["val", "photo"], finetune=True,
                                  epochs=2, grid=grid, scale=20.0, seed=seed)
            assert curves["tip_adapter_f"][k][seed] == pytest.approx(heads.accuracy(tip.logits(f), y))
            assert np.array_equal(right["tip_adapter_f"][k][seed], (tip.logits(f).argmax(1) == y).numpy())
            alone = cafo.run(b, W, k, 0, grid=grid, scale=20.0, epochs=2, seed=seed)
            assert curves["cafo"][k][seed] == pytest.approx(alone.accuracy["photo"])
            assert np.array_equal(right["cafo"][k][seed], alone.correct["photo"])
            assert curves["zero_shot"][k][seed] == pytest.approx(heads.accuracy(heads.logits(f, W, 20.0), y))
        assert right["cafo"][k].shape == (2, 20) and right["cafo"][k].dtype == bool
    assert set(secs) == {"tip_adapter", "tip_adapter_f", "cafo"} and all(len(v) == 2 for v in secs.values())
    assert set(dom["cafo"]) == {"photo", "sketch", "ood"}
    assert dom["tip_adapter_f"]["photo"] == pytest.approx(curves["tip_adapter_f"][2])


def test_memo_returns_the_run_it_stored_and_ablation_rows_share_it():
    b, W, S, _, _ = _toy_bank()
    grid = (torch.tensor([1.0, 4.0]), torch.tensor([0.0, 1.0]))
    memo = {}
    first = cafo.run(b, W, 2, 0, grid=grid, scale=20.0, epochs=2, seed=1, memo=memo)
    assert cafo.run(b, W, 2, 0, grid=grid, scale=20.0, epochs=2, seed=1, memo=memo) is first and len(memo) == 1
    assert cafo.run(b, W, 2, 0, grid=grid, scale=20.0, epochs=2, seed=0, memo=memo) is not first
    table = cafo.ablation(b, {"both": dict(W=W, k_prime=0), "clip": dict(W=W, k_prime=0, encoders=("clip",))},
                          [2], 2, memo=memo, grid=grid, scale=20.0, epochs=2)
    acc, right = table.accuracy, table.correct
    assert len(memo) == 4  # (both, seed 0) and (both, seed 1) were already there
    assert acc["both"][2] == [memo_run.accuracy["photo"] for memo_run in (cafo.run(b, W, 2, 0, grid=grid, scale=20.0,
                                                                             epochs=2, seed=s) for s in (0, 1))]
    assert right["clip"][2].shape == (2, 20) and acc["clip"][2] == pytest.approx(right["clip"][2].mean(1).tolist())


@pytest.mark.parametrize("fusion", cafo.FUSIONS)
def test_batched_search_equals_one_beta_at_a_time(fusion):
    keys, y, f, W = _toy()
    g = torch.Generator().manual_seed(3)
    fd = F.normalize(torch.randn(20, 8, generator=g), dim=-1)
    kd = F.normalize(torch.randn(30, 8, generator=g), dim=-1)
    yv = torch.arange(20) % 5
    caches = [tip_adapter.build_cache(keys, y, 5), tip_adapter.build_cache(kd, y, 5)]
    betas, alphas = torch.linspace(0.1, 7.0, 9), torch.linspace(0.0, 4.0, 6)
    model = cafo.search(cafo.CaFo(W, caches, 1.0, 1.0, fusion, scale=20.0), [f, fd], yv, betas, alphas, max_elems=700)
    best = (-1.0, None, None)
    for beta in betas.tolist():
        for alpha in alphas.tolist():
            acc = heads.accuracy(cafo.CaFo(W, caches, alpha, beta, fusion, scale=20.0).logits([f, fd]), yv)
            if acc > best[0]:
                best = (acc, alpha, beta)
    assert (model.val_accuracy, model.alpha, model.beta) == pytest.approx(best)


def test_shot_views_map_train_positions_and_refuse_an_image_not_encoded():
    views = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    b = cafo.Bank({}, {"clip": features.ShotViews(views, rows=np.array([2, 5, 7]))}, {},
                  np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0), torch.zeros(9).long(), 0)
    assert torch.equal(b.train_views("clip", [5, 7]), views[:, [1, 2]])
    with pytest.raises(ValueError, match="not among them"):
        b.train_views("clip", [5, 6])
    full = features.ShotViews(views)
    assert torch.equal(full.take([0, 2]), views[:, [0, 2]])


def test_a_real_train_split_gets_views_of_the_drawn_shots_only(micro, tmp_path, monkeypatch):
    """A streamed (real) train split: views for the union of the few-shot draws, and the same views a run would get
    from encoding those images on their own."""
    from fmcls_lib import data
    from fmcls_lib.standins import datasets as standin_data
    standin_data.write_cifar10(tmp_path, train_per_class=12, test_per_class=4)
    monkeypatch.setenv("FMCLS_DATA", str(tmp_path))
    monkeypatch.setenv("FMCLS_DATASET_CHECKSUMS", "off")
    b = cafo.bank({"clip": micro, "dino": micro}, "cifar10", ("photo",), augment_epochs=2, shots=[1, 2], seeds=2,
                  progress=False)
    train = data.load("cifar10", "train", "photo")
    drawn = np.unique(np.concatenate([data.few_shot(train.labels, k, s) for k in (1, 2) for s in range(2)]))
    assert np.array_equal(b.views["clip"].rows, drawn) and b.views["clip"].views.shape[:2] == (2, len(drawn)) < (2, len(train))
    torch.testing.assert_close(b.views["clip"].views, features.augmented_features(micro, train.subset(drawn), 2, 0,
                                                                            progress=False))
    W = heads.zero_shot_head(micro, train.classnames, prompts.PHOTO)
    grid = (torch.tensor([1.0]), torch.tensor([0.0, 1.0]))
    one = cafo.run(b, W, 2, seed=1, finetune=False, grid=grid, scale=heads.logit_scale(micro))
    assert 0.0 <= one.accuracy["photo"] <= 1.0 and one.seconds > 0 and set(one.correct) == {"photo"}
    with pytest.raises(ValueError, match="not among them"):
        cafo.run(b, W, 4, seed=0, finetune=False, grid=grid)
