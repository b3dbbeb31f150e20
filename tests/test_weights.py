import math

import numpy as np
import pytest
import torch

import fmcls_lib as fm
from fmcls_lib import finetune as ft, soups, training, weights
from fmcls_lib.errors import UnknownNameError


def _net(seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.LazyLinear(2))
    net(torch.randn(5, 3, 6, 6))  # materialise, and move the BN statistics
    return net


def test_endpoints_are_reproduced_exactly():
    a, b = _net(0).state_dict(), _net(1).state_dict()
    for coeffs, ref in (([1, 0], a), ([0, 1], b)):
        out = weights.combine([a, b], coeffs)
        assert all(torch.equal(out[k], ref[k]) for k in ref)
    assert all(torch.equal(weights.wise(a, b, 0.0)[k], a[k]) for k in a)
    assert all(torch.equal(weights.wise(a, b, 1.0)[k], b[k]) for k in a)


def test_uniform_combination_is_the_mean_including_bn_buffers():
    sds = [_net(s).state_dict() for s in range(3)]
    out = weights.combine(sds, [1 / 3] * 3)
    for k, v in out.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, torch.stack([sd[k] for sd in sds]).mean(0))
    assert "1.running_mean" in out and out["1.num_batches_tracked"].dtype == torch.long


def test_integer_buffers_come_from_the_largest_coefficient():
    a, b = _net(0).state_dict(), _net(1).state_dict()
    b["1.num_batches_tracked"] = torch.tensor(7)
    assert int(weights.combine([a, b], [0.3, 0.7])["1.num_batches_tracked"]) == 7
    assert int(weights.combine([a, b], [0.7, 0.3])["1.num_batches_tracked"]) == int(a["1.num_batches_tracked"])


def test_mismatches_name_the_first_offending_key():
    a = _net(0).state_dict()
    b = dict(a)
    del b["1.running_var"]
    with pytest.raises(fm.IncompatibleWeightsError, match="'1.running_var' is missing from state dict 1"):
        weights.combine([a, b], [0.5, 0.5])
    c = dict(a, **{"0.weight": torch.zeros(5, 3, 3, 3)})
    with pytest.raises(fm.IncompatibleWeightsError, match=r"'0.weight' is \(4, 3, 3, 3\).*\(5, 3, 3, 3\)"):
        weights.combine([a, c], [0.5, 0.5])
    d = dict(a, extra=torch.zeros(1))
    with pytest.raises(fm.IncompatibleWeightsError, match="extra key 'extra'"):
        weights.combine([a, d], [0.5, 0.5])
    with pytest.raises(ValueError, match="one coefficient per state dict"):
        weights.combine([a, a], [1.0])


def test_wise_outside_unit_interval_is_rejected_unless_extrapolating():
    a, b = _net(0).state_dict(), _net(1).state_dict()
    with pytest.raises(ValueError, match="extrapolate=True"):
        weights.wise(a, b, 1.5)
    with pytest.raises(ValueError, match="outside"):
        weights.wise(a, b, -0.1)
    out = weights.wise(a, b, 1.5, extrapolate=True)
    torch.testing.assert_close(out["0.weight"], a["0.weight"] + 1.5 * (b["0.weight"] - a["0.weight"]))


def _classifier(micro):
    W = torch.nn.functional.normalize(torch.randn(5, 32), dim=-1)
    return ft.from_zero_shot(micro, W)


def test_lc_wise_equals_the_output_space_ensemble(micro):
    m0 = _classifier(micro)
    theta_0 = {k: v.clone() for k, v in m0.state_dict().items()}
    m1 = _classifier(micro)
    m1.load_state_dict(theta_0)
    with torch.no_grad():
        m1.head.weight.add_(torch.randn_like(m1.head.weight))
        m1.head.bias.add_(1.0)
    x = torch.randn(6, 3, 32, 32)
    out0, out1 = ft.predict(m0, x), ft.predict(m1, x)
    for alpha in (0.0, 0.3, 1.0):
        m = _classifier(micro)
        m.load_state_dict(weights.wise(theta_0, m1.state_dict(), alpha))
        torch.testing.assert_close(ft.predict(m, x), (1 - alpha) * out0 + alpha * out1, atol=1e-4, rtol=1e-4)


def _data(n=48):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("mode", ["lc", "e2e"])
def test_finetuning_changes_only_what_its_mode_allows(micro, mode):
    m = _classifier(micro)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = _data()
    res = ft.finetune(m, ft.Recipe(mode=mode, epochs=2, lr=1e-2, batch_size=16), x, y, x[:16], y[:16], progress=False)
    after = res.state_dict
    enc_changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith("image_encoder."))
    head_changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))
    assert head_changed
    assert enc_changed == (mode == "e2e")
    assert res.best_epoch == max(range(2), key=lambda e: (res.history[e]["val"], -e))


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(UnknownNameError, match="accepted: lc, e2e"):
        ft.Recipe(mode="full")


def test_regularising_towards_zero_shot_keeps_weights_closer(micro):
    x, y = _data()
    dist = []
    for lam in (0.0, 10.0):
        m = _classifier(micro)
        theta_0 = {k: v.clone() for k, v in m.state_dict().items()}
        ft.finetune(m, ft.Recipe(epochs=2, lr=1e-2, batch_size=16, l2_to_init=lam), x, y, x, y, progress=False)
        dist.append(sum(((m.state_dict()[k] - theta_0[k]).float() ** 2).sum() for k in theta_0 if "weight" in k))
    assert dist[1] < dist[0]


def test_greedy_soup_never_lowers_held_out_accuracy_and_starts_from_the_best():
    sds = [_net(s).state_dict() for s in range(5)]
    scores = [0.5, 0.9, 0.7, 0.8, 0.6]
    fake = iter([0.91, 0.85, 0.91, 0.95])  # held-out accuracy of each candidate soup, in trial order
    g = weights.greedy_soup(sds, lambda sd: next(fake), scores)
    soup, kept, steps = g.soup, g.kept, g.steps
    assert kept[0] == 1 and steps[0]["ingredient"] == 1  # the best individual is always in
    assert [s["ingredient"] for s in steps] == [1, 3, 2, 4, 0]
    assert [s["kept"] for s in steps] == [True, True, False, True, True]
    after = [s["after"] for s in steps if s["kept"]]
    assert after == sorted(after)  # held-out accuracy never decreases
    expected = weights.uniform_soup([sds[i] for i in kept])
    for k in expected:
        if expected[k].is_floating_point():
            torch.testing.assert_close(soup[k], expected[k])


def test_greedy_soup_strict_rule_rejects_ties():
    sds = [_net(s).state_dict() for s in range(2)]
    assert weights.greedy_soup(sds, lambda sd: 0.9, [0.9, 0.8], keep_if=">=").kept == [0, 1]
    assert weights.greedy_soup(sds, lambda sd: 0.9, [0.9, 0.8], keep_if=">").kept == [0]
    with pytest.raises(fm.UnknownNameError, match="accepted: >=, >"):
        weights.greedy_soup(sds, lambda sd: 0.9, [0.9, 0.8], keep_if="~")


def test_ensemble_of_one_model_is_the_model_and_greedy_ensemble_starts_from_best():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(20, 3, generator=g) for _ in range(3)]
    y = logits[1].argmax(1)
    assert weights.greedy_ensemble(logits, y, [0.1, 0.9, 0.2])[0] == 1
    assert weights.greedy_ensemble(logits[1:2], y, [1.0]) == [0]
    assert weights.greedy_ensemble(logits, y, [0.1, 0.9, 0.2], keep_if=">")[0] == 1
    with pytest.raises(fm.UnknownNameError, match="accepted: >=, >"):  # once silently the strict rule
        weights.greedy_ensemble(logits, y, [0.1, 0.9, 0.2], keep_if=">=!")


def test_learned_soup_weights_are_a_softmax(micro):
    thetas = [_classifier(micro).state_dict() for _ in range(3)]
    m = _classifier(micro)
    x, y = _data(32)
    learned = weights.learned_soup(thetas, m, x, y, epochs=2)
    soup, mix = learned.soup, learned.weights
    assert mix.shape == (3,) and float(mix.sum()) == pytest.approx(1.0) and (mix > 0).all()
    mix_l = weights.learned_soup(thetas, m, x, y, by_layer=True, epochs=1).weights
    torch.testing.assert_close(mix_l.sum(0), torch.ones(mix_l.shape[1]))
    expected = weights.combine(thetas, mix.tolist())
    for k in soup:
        if soup[k].is_floating_point():
            torch.testing.assert_close(soup[k], expected[k], atol=1e-5, rtol=1e-4)


def test_angle():
    z = {"w": torch.zeros(2)}
    assert weights.angle(z, {"w": torch.tensor([1.0, 0])}, {"w": torch.tensor([0, 2.0])}) == pytest.approx(90)
    assert weights.angle(z, {"w": torch.tensor([1.0, 1])}, {"w": torch.tensor([2.0, 2])}) == pytest.approx(0, abs=1e-4)


def test_angle_over_the_planes_parameters_leaves_batchnorm_statistics_out(micro):
    from fmcls_lib import landscape
    m = _classifier(micro)
    t0 = training.state_dict(m)
    g = torch.Generator().manual_seed(1)
    t1, t2 = ({k: v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in t0.items()}
              for _ in range(2))
    params = [k for k, _ in m.named_parameters()]
    assert any(k.endswith("running_var") for k in t0) and not any(k.endswith("running_var") for k in params)
    pl = landscape.plane(t0, t1, t2, params)  # the plane's basis: u along theta_1 - theta_0, v orthogonal in it
    x1, y1 = pl.project(t1)
    x2, y2 = pl.project(t2)
    cos = (x1 * x2 + y1 * y2) / (math.hypot(x1, y1) * math.hypot(x2, y2))
    assert weights.angle(t0, t1, t2, params) == pytest.approx(math.degrees(math.acos(cos)), abs=1e-6)
    assert weights.angle(t0, t1, t2) != pytest.approx(weights.angle(t0, t1, t2, params), abs=1e-3)  # all entries


def test_wise_observations_against_hand_computed_values():
    accs = {0.0: {"photo": 0.6}, 0.5: {"photo": 0.62}, 1.0: {"photo": 0.8}}
    worst, best, margin = weights.wise_observations(accs, "photo")
    assert worst == pytest.approx(0.62 - 0.7) and best == 1.0 and margin == pytest.approx(0.0)
    accs[0.5]["photo"] = 0.85
    worst, best, margin = weights.wise_observations(accs, "photo")
    assert worst == pytest.approx(0.0) and best == 0.5 and margin == pytest.approx(0.05)


def test_branch_at_epoch_zero_is_another_data_order_and_at_the_end_is_the_same_run(micro):
    x, y = _data()
    r = ft.Recipe(epochs=2, lr=1e-2, batch_size=16, seed=3)
    W = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    run = lambda branch: ft.finetune(ft.from_zero_shot(micro, W), r, x, y, x[:16], y[:16], progress=False,  # noqa: E731
                                     keep="last", branch=branch).state_dict
    parent, same, other = run(None), run((2, 99)), run((0, 99))
    assert all(torch.equal(parent[k], same[k]) for k in parent)
    assert any(not torch.equal(parent[k], other[k]) for k in parent if parent[k].is_floating_point())
    with pytest.raises(UnknownNameError, match="accepted: best, last"):
        ft.finetune(_classifier(micro), r, x, y, x, y, keep="final")


def test_shared_prefix_study_scores_the_average_of_parent_and_child(micro):
    from fmcls_lib import landscape
    from fmcls_lib.weights import combine
    x, y = _data(64)
    X = {("train", "photo"): (x[:48], y[:48]), ("val", "photo"): (x[48:], y[48:])}
    W = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    r = ft.Recipe(epochs=2, lr=1e-2, batch_size=16)
    out = soups.shared_prefix_study(micro, W, r, X, [0, 2], init="scratch", progress=False)
    assert set(out) == {0, 2}
    assert out[2]["child"] == out[2]["parent"]  # sharing every epoch: the child is the parent
    assert out[2]["average"] == pytest.approx(out[2]["parent"]) and out[2]["barrier"] == pytest.approx(0, abs=1e-9)
    # independent recomputation of k=0 from the same runs
    p = ft.finetune(soups.from_scratch(micro, W, r.seed), r, *X["train", "photo"], *X["val", "photo"], progress=False, keep="last").state_dict
    c = ft.finetune(soups.from_scratch(micro, W, r.seed), r, *X["train", "photo"], *X["val", "photo"], progress=False, keep="last",
                    branch=(0, 12345)).state_dict
    m = soups.from_scratch(micro, W)
    avg = 1 - landscape.evaluate(m, combine([p, c], [0.5, 0.5]), x[48:], y[48:], x[:48])[0]
    assert out[0]["average"] == pytest.approx(avg)
    with pytest.raises(ValueError, match="outside"):
        soups.shared_prefix_study(micro, W, r, X, [5], progress=False)


def test_ingredients_through_ray_equal_the_in_process_ones(micro, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from fmcls_lib import executors
    x, y = _data(64)
    X = {("train", "photo"): (x[:48], y[:48]), ("val", "photo"): (x[48:], y[48:])}
    W = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    recipes = [ft.Recipe(epochs=1, lr=lr, batch_size=16) for lr in (1e-3, 1e-2)]
    monkeypatch.setenv("FMCLS_CACHE", str(tmp_path / "a"))
    here = soups.train_ingredients(micro, W, recipes, X, "t", progress=False)
    monkeypatch.setenv("FMCLS_CACHE", str(tmp_path / "b"))
    ex = executors.Ray(num_cpus=1)
    try:
        remote = soups.train_ingredients(micro, W, recipes, X, "t", progress=False, executor=ex)
    finally:
        ex.shutdown()
    assert len(list((tmp_path / "b" / "ingredients").glob("*.pt"))) == 2  # written by the Ray workers
    for a, b in zip(here, remote):
        assert a.best_epoch == b.best_epoch
        for k in a.state_dict:
            torch.testing.assert_close(a.state_dict[k], b.state_dict[k])


def test_executor_names_are_checked():
    from fmcls_lib import executors
    assert isinstance(executors.get(None), executors.InProcess)
    with pytest.raises(UnknownNameError, match="accepted: None or 'local'"):
        executors.get("dask")
    with pytest.raises(TypeError, match="no map"):
        executors.get(object())


def test_swalr_holds_the_rate_at_swa_lr_after_its_start(micro):
    # swa=(1, 0.0): SWALR anneals to a rate of 0 during epoch 1, so epoch 2 (rate 0) leaves the weights alone
    x, y = _data()
    W = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    snaps = []
    on_step = lambda m: snaps.append({k: v.clone() for k, v in m.state_dict().items() if "weight" in k})  # noqa: E731
    ft.finetune(ft.from_zero_shot(micro, W), ft.Recipe(epochs=3, lr=1e-2, batch_size=16), x, y, x[:16], y[:16],
                progress=False, on_step=on_step, swa=(1, 0.0))
    steps = len(snaps) // 3
    assert all(torch.equal(snaps[2 * steps - 1][k], snaps[-1][k]) for k in snaps[-1])
    assert any(not torch.equal(snaps[steps - 1][k], snaps[2 * steps - 1][k]) for k in snaps[-1])


def test_predict_folds_batchnorm_without_changing_the_logits(micro):
    m = _classifier(micro)
    x = torch.randn(ft.FUSE_FROM + 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    m.eval()
    with torch.no_grad():
        ref, feats = m(x), m.features(x)
    torch.testing.assert_close(ft.predict(m, x), ref, atol=1e-4, rtol=1e-4)          # fused (enough images)
    torch.testing.assert_close(ft.predict(m, x[:8]), ref[:8], atol=1e-5, rtol=1e-5)  # as it is (few images)
    torch.testing.assert_close(ft.predict(m, x, features=True), feats, atol=1e-5, rtol=1e-4)
    assert all(b.training is False for b in m.modules())  # the model itself is left in eval mode, unfused
    assert any(isinstance(b, torch.nn.BatchNorm2d) for b in m.modules())


def test_lc_on_cached_features_takes_the_same_steps_as_running_the_encoder(micro):
    import math
    x, y = _data()
    r = ft.Recipe(mode="lc", epochs=2, lr=1e-2, batch_size=16, seed=4)
    fast = ft.finetune(_classifier_seeded(micro), r, x, y, x[:16], y[:16], progress=False, keep="last").state_dict
    # the loop of finetune, written out with the encoder run at every step
    m = _classifier_seeded(micro)
    torch.manual_seed(r.seed)
    gen = torch.Generator().manual_seed(r.seed)
    params = [p for p in m.head.parameters()]
    opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
    total = r.epochs * math.ceil(len(x) / r.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / r.warmup_steps)
                                              * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    m.train()
    m.image_encoder.eval()
    for _ in range(r.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(r.batch_size):
            loss = torch.nn.functional.cross_entropy(m(x[idx]), torch.nn.functional.one_hot(y[idx], 5).float())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, r.clip_grad)
            opt.step()
            sched.step()
    for k, v in m.state_dict().items():
        torch.testing.assert_close(fast[k], v, atol=1e-5, rtol=1e-4)


def _classifier_seeded(micro, seed=0):
    W = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return ft.from_zero_shot(micro, W)


def test_keep_last_scores_validation_once_and_returns_the_last_iterate(micro):
    x, y = _data()
    res = ft.finetune(_classifier(micro), ft.Recipe(epochs=3, lr=1e-2, batch_size=16), x, y, x[:16], y[:16],
                      progress=False, keep="last")
    assert [h["val"] is None for h in res.history] == [True, True, False] and res.best_epoch == 2


def test_first_per_class_is_a_prefix_for_the_world_and_balanced_otherwise():
    assert ft.first_per_class(np.arange(40) % 4, 3).tolist() == list(range(12))
    assert ft.first_per_class(np.array([1, 1, 0, 1, 0, 0, 2]), 2).tolist() == [0, 1, 2, 4, 6]


def test_correctness_adds_the_shifted_domains_one_after_another_and_the_interval():
    logits = {"photo": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "sketch": torch.tensor([[1.0, 0.0]]),
              "pixel": torch.tensor([[0.0, 1.0]])}
    labels = {"photo": torch.tensor([0, 0]), "sketch": torch.tensor([0]), "pixel": torch.tensor([0])}
    c = ft.correctness(logits, labels)
    assert c["photo"].tolist() == [True, False] and c["ood"].tolist() == [True, False]
    assert fm.plots.interval([0.5]) == (0.5, 0.0)
    mean, half = fm.plots.interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.303 / np.sqrt(3), rel=1e-3)  # t(0.975, 2) * sd / sqrt(n)


def test_world_images_are_rendered_once_and_then_read_from_the_cache(micro):
    from fmcls_lib import cache, data
    X = ft.load_images(micro, "world/colors", ("photo",), splits=("val",))
    ds = data.load("world/colors", "val", "photo")
    assert cache.get("images", {"images": ds.key}) is not None
    np.testing.assert_array_equal(ft.rendered(ds), ds.images)
    torch.testing.assert_close(X["val", "photo"][0], micro.prepare(ds.images))


def test_averaged_run_recomputes_swa_batchnorm_and_averages_the_emas(micro, tmp_path, monkeypatch):
    # SWA's BatchNorm statistics are update_bn's on the train images; the EMA's are the EMA of the run's own
    from torch.optim.swa_utils import update_bn
    monkeypatch.setenv("FMCLS_CACHE", str(tmp_path))
    x, y = _data(64)
    X = {("train", "photo"): (x[:48], y[:48]), ("val", "photo"): (x[48:], y[48:])}
    W = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    out = soups.averaged_run(micro, W, ft.Recipe(epochs=2, lr=1e-2, batch_size=16), X, progress=False)
    stats = [k for k in out["swa"] if k.endswith(("running_mean", "running_var"))]
    m = ft.from_zero_shot(micro, W)
    for name, recomputed in (("swa", True), ("ema", False)):
        m.load_state_dict(out[name])
        update_bn([x[:48]], m)
        close = all(torch.allclose(m.state_dict()[k], out[name][k], atol=1e-6) for k in stats)
        assert close == recomputed, name


def test_stable_lr_range_is_the_widest_run_whose_pair_soups_all_gain():
    nan = float("nan")
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    scores = [0.70, 0.80, 0.82, 0.81, 0.60]
    gain = [[0, -0.05, -0.05, -0.03, -0.03],  # lesson 06's measured grid, rounded: 3e-4 .. 3e-3 is stable
            [nan, 0, 0.002, 0.012, -0.027],
            [nan, nan, 0, 0.01, -0.018],
            [nan, nan, nan, 0, -0.016],
            [nan, nan, nan, nan, 0]]
    assert soups.stable_lr_range(lrs, gain, scores) == (3e-4, 3e-3)
    gain[1][3] = -0.001  # one losing pair inside breaks the run: of the two runs of two rates left,
    assert soups.stable_lr_range(lrs, gain, scores) == (1e-3, 3e-3)  # the one with the larger gain (0.01 > 0.002)
    gain[2][3] = 0.002   # equal gains: the lower rates
    assert soups.stable_lr_range(lrs, gain, scores) == (3e-4, 1e-3)
    # no stable pair: the single best rate on held-out, not the largest
    assert soups.stable_lr_range([1e-3, 1e-2], [[0, -0.1], [nan, 0]], [0.8, 0.7]) == (1e-3, 1e-3)
    assert soups.stable_lr_range([1e-3, 1e-2], [[0, -0.1], [nan, 0]], [0.6, 0.7]) == (1e-2, 1e-2)
    with pytest.raises(ValueError, match="at least one"):
        soups.stable_lr_range([], [], [])
