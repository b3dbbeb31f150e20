import inspect

import pytest
import torch

from fmcls_lib import heads, tip_adapter as ta


def _data(n=40, m=24, c=4, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    norm = torch.nn.functional.normalize
    f = norm(torch.randn(n, d, generator=g), dim=-1)
    y = torch.randint(0, c, (n,), generator=g)
    views = norm(torch.randn(3, m, d, generator=g), dim=-1)
    y_tr = torch.arange(m) % c
    W = norm(torch.randn(c, d, generator=g), dim=-1)
    return f, y, views, y_tr, W


def test_alpha_zero_is_exactly_zero_shot():
    f, _, views, y_tr, W = _data()
    cache = ta.build_cache(views, y_tr, 4)
    for beta in (0.5, 5.5, 50.0):
        assert torch.equal(ta.logits(f, cache, W, alpha=0.0, beta=beta, scale=37.0), heads.logits(f, W, 37.0))


def test_cache_is_normalised_mean_of_views_with_one_hot_values():
    _, _, views, y_tr, _ = _data()
    cache = ta.build_cache(views, y_tr, 4)
    torch.testing.assert_close(cache.keys, views.mean(0) / views.mean(0).norm(dim=-1, keepdim=True))
    assert torch.equal(cache.values.argmax(1), y_tr) and torch.equal(cache.values.sum(1), torch.ones(24))


def test_large_beta_makes_the_cache_a_nearest_neighbour_vote():
    _, _, views, y_tr, W = _data()
    cache = ta.build_cache(views, y_tr, 4)
    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(cache.keys + 0.05 * torch.randn(cache.keys.shape, generator=g), dim=-1)
    nearest = y_tr[(q @ cache.keys.T).argmax(1)]
    cache_term = ta.logits(q, cache, W, alpha=1.0, beta=500.0, scale=0.0)  # scale 0: the cache term alone
    assert torch.equal(cache_term.argmax(1), nearest)
    share = cache_term.max(1).values / cache_term.sum(1)
    assert (share > 0.99).all()


def test_batched_search_equals_nested_loop():
    for seed in range(3):
        f, y, views, y_tr, W = _data(seed=seed)
        cache = ta.build_cache(views, y_tr, 4)
        betas, alphas = ta.official_grid((7, 3), (25, 8))
        s = ta.search(f, y, cache, W, betas, alphas, scale=20.0)
        alpha, beta, acc = ta.search_loop(f, y, cache, W, betas, alphas, scale=20.0)
        assert (s.alpha, s.beta) == pytest.approx((alpha, beta)) and s.accuracy == pytest.approx(acc)
        for i, b in enumerate(betas):
            for j, a in enumerate(alphas):
                assert s.grid[i, j] == pytest.approx(
                    heads.accuracy(ta.logits(f, cache, W, float(a), float(b), scale=20.0), y))


def test_chunked_grid_equals_unchunked():
    f, y, views, y_tr, W = _data()
    cache = ta.build_cache(views, y_tr, 4)
    betas, alphas = ta.official_grid()
    assert torch.equal(ta.grid_accuracy(f, y, cache, W, betas, alphas),
                       ta.grid_accuracy(f, y, cache, W, betas, alphas, max_elems=100))


def test_official_grid_shape():
    betas, alphas = ta.official_grid()
    assert len(betas) == 200 and len(alphas) == 20
    assert betas[0] == pytest.approx(0.1) and betas[-1] < 7 and alphas[-1] < 3


def test_tip_adapter_f_trains_only_the_keys():
    f, y, views, y_tr, W = _data()
    W0, views0 = W.clone(), views.clone()
    model = ta.fit(views, y_tr, W, f, y, finetune=True, epochs=5, grid=ta.official_grid((7, 3), (10, 5)))
    cache = ta.build_cache(views0, y_tr, 4)
    assert torch.equal(W, W0) and torch.equal(views, views0)
    assert torch.equal(model.cache.keys, cache.keys) and torch.equal(model.cache.values, cache.values)
    assert model.keys is not None and model.keys.shape == cache.keys.shape
    assert 0 <= model.fit.best_epoch < 5 and len(model.fit.history) == 5
    assert model.fit.val_accuracy == max(h["val"] for h in model.fit.history)


def test_selection_path_never_sees_test_data():
    # fit() is the whole selection path; its inputs are train views + one selection split.
    names = set(inspect.signature(ta.fit).parameters)
    assert not any("test" in n for n in names)
    f, y, views, y_tr, W = _data()
    poisoned = torch.full_like(f, float("nan"))  # a "test set" nobody may read
    a = ta.fit(views, y_tr, W, f, y, finetune=True, epochs=3, grid=ta.official_grid((7, 3), (10, 5)))
    assert torch.isnan(a.logits(poisoned)).all()  # only evaluation touches it
    b = ta.fit(views, y_tr, W, f, y, finetune=True, epochs=3, grid=ta.official_grid((7, 3), (10, 5)))
    assert (a.alpha, a.beta, a.fit.best_epoch) == (b.alpha, b.beta, b.fit.best_epoch)


def test_clip_adapter_with_zero_ratio_is_zero_shot():
    f, y, views, y_tr, W = _data()
    model = heads.ClipAdapter(16, W, ratio=0.0, scale=10.0)
    torch.testing.assert_close(model(f), heads.logits(f, W, 10.0))
    _, fit = heads.clip_adapter(views, y_tr, W, f, y, epochs=4)
    assert fit.val_accuracy == max(h["val"] for h in fit.history)


def test_compare_methods_returns_the_per_image_correctness_its_accuracies_average():
    f, y, views, y_tr, W = _data()
    S = {("train", "photo"): (torch.nn.functional.normalize(views.mean(0), dim=-1), y_tr),
         ("val", "photo"): (f[:20], y[:20]), ("test", "photo"): (f[20:], y[20:])}
    res = ta.compare_methods(S, views, W, [1, 2], 2, grid=ta.official_grid((7, 3), (10, 5)), tip_f_epochs=2,
                             clip_adapter_epochs=2, progress=False)
    acc, cost, right = res.accuracy, res.cost, res.correct
    for m in ta.METHODS:
        for k in (1, 2):
            c = right[m][k]["photo"]
            assert c.shape == (2, 20) and c.dtype == bool
            assert acc[m][k]["photo"] == pytest.approx(c.mean(1).tolist())
        assert len(cost[m]) == 2  # one entry per seed at the largest shot count
    assert (right["zero_shot"][1]["photo"] == right["zero_shot"][1]["photo"][0]).all()  # draws nothing


def test_tip_adapter_f_cost_is_its_own_fit_not_the_plain_search_too(monkeypatch):
    """The plain Tip-Adapter fit is made 0.3 s slower: Tip-Adapter's reported cost grows by it, Tip-Adapter-F's
    (its own cache, key training and search) does not."""
    import time
    f, y, views, y_tr, W = _data()
    S = {("train", "photo"): (torch.nn.functional.normalize(views.mean(0), dim=-1), y_tr),
         ("val", "photo"): (f[:20], y[:20]), ("test", "photo"): (f[20:], y[20:])}
    fit = ta.fit

    def slow_plain(*a, finetune=False, **kw):
        if not finetune:
            time.sleep(0.3)
        return fit(*a, finetune=finetune, **kw)

    monkeypatch.setattr(ta, "fit", slow_plain)
    cost = ta.compare_methods(S, views, W, [2], 1, grid=ta.official_grid((7, 3), (10, 5)), tip_f_epochs=2,
                              clip_adapter_epochs=2, progress=False).cost
    assert cost["tip_adapter"][0]["seconds"] >= 0.3 > cost["tip_adapter_f"][0]["seconds"]
