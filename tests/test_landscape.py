import numpy as np
import pytest
import torch

from fmcls_lib import finetune as ft, landscape


@pytest.fixture(scope="module")
def three(micro):
    W = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    model = ft.from_zero_shot(micro, W)
    theta_0 = {k: v.clone() for k, v in model.state_dict().items()}
    out = [theta_0]
    for s in (1, 2):
        g = torch.Generator().manual_seed(s)
        out.append({k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
                    for k, v in theta_0.items()})
    return model, out


def test_basis_is_orthonormal_and_models_land_at_their_coordinates(three):
    model, (t0, t1, t2) = three
    keys = [k for k, _ in model.named_parameters()]
    pl = landscape.plane(t0, t1, t2, keys)
    u, v = landscape._flat(pl.u, keys), landscape._flat(pl.v, keys)
    assert float(u @ u) == pytest.approx(1) and float(v @ v) == pytest.approx(1) and float(u @ v) == pytest.approx(0, abs=1e-9)
    assert pl.project(t0) == pytest.approx((0, 0), abs=1e-6)
    x1, y1 = pl.project(t1)
    assert y1 == pytest.approx(0, abs=1e-6) and x1 > 0
    for theta in (t1, t2):
        x, y = pl.project(theta)
        back = pl.point(x, y)
        for k in keys:
            torch.testing.assert_close(back[k], theta[k], atol=1e-5, rtol=1e-5)


def test_batched_grid_equals_the_load_state_dict_loop(three):
    model, (t0, t1, t2) = three
    pl = landscape.plane(t0, t1, t2, [k for k, _ in model.named_parameters()])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, 32, 32, generator=g), torch.randint(0, 5, (20,), generator=g)
    x_bn = torch.randn(16, 3, 32, 32, generator=g)
    xs, ys = np.linspace(-1, 2, 3), np.linspace(-1, 1, 2)
    e1, l1 = landscape.grid_loop(model, pl, xs, ys, x, y, x_bn, progress=False)
    e2, l2 = landscape.grid_batched(model, pl, xs, ys, x, y, x_bn, chunk=4, progress=False)
    assert torch.equal(e1, e2)
    torch.testing.assert_close(l1, l2, atol=1e-3, rtol=1e-3)
    assert landscape.has_batchnorm(model)


def _smooth_pair(seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.GELU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 4)).eval()
    t0 = {k: v.clone() for k, v in m.state_dict().items()}
    t1 = {k: (v + 0.3 * torch.randn_like(v)).abs() if "running_var" in k else
          (v + 0.3 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in t0.items()}
    g = torch.Generator().manual_seed(seed)
    return m, t0, t1, torch.randn(48, 3, 8, 8, generator=g), torch.randint(0, 4, (48,), generator=g)


def test_soup_ensemble_gap_curvature_matches_finite_differences():
    from torch.func import functional_call
    m, t0, t1, x, y = _smooth_pair()
    r = landscape.soup_ensemble_gap(m, t0, t1, 0.3, x, y, beta=1.0)

    def loss(a):  # independent: the original module (eval BatchNorm), float64, no torch.func transforms
        sd = {k: t0[k].double() + a * (t1[k].double() - t0[k].double()) if t0[k].is_floating_point() else t0[k] for k in t0}
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(functional_call(m.double(), sd, (x.double(),)), y))

    h = 1e-3
    assert r["curvature"] == pytest.approx((loss(0.3 + h) - 2 * loss(0.3) + loss(0.3 - h)) / h ** 2, rel=1e-3)
    m.float()
    ens = 0.7 * functional_call(m, t0, (x,)) + 0.3 * functional_call(m, t1, (x,))
    assert r["measured"] == pytest.approx(loss(0.3) - float(torch.nn.functional.cross_entropy(ens, y)), abs=1e-4)


def test_soup_ensemble_gaps_at_once_equal_one_point_at_a_time():
    m, t0, t1, x, y = _smooth_pair(1)
    many = landscape.soup_ensemble_gaps(m, t0, t1, [0.25, 0.6], x, y)
    for name, beta in (("beta calibrated", None), ("beta = 1", 1.0)):
        for alpha, got in zip((0.25, 0.6), many[name]):
            one = landscape.soup_ensemble_gap(m, t0, t1, alpha, x, y, beta=beta)
            assert got.keys() == one.keys()
            for k in one:
                assert got[k] == pytest.approx(one[k], rel=1e-4, abs=1e-6), (name, alpha, k)


def test_soup_ensemble_gap_vanishes_for_a_model_linear_in_its_weights():
    # logits linear in theta: the soup IS the ensemble, and -L'' cancels the variance term exactly
    torch.manual_seed(0)
    m = torch.nn.Linear(10, 5)
    t0 = {k: v.clone() for k, v in m.state_dict().items()}
    t1 = {k: v + torch.randn_like(v) for k, v in t0.items()}
    x, y = torch.randn(64, 10), torch.randint(0, 5, (64,))
    for beta in (None, 1.0, 3.0):
        r = landscape.soup_ensemble_gap(m, t0, t1, 0.5, x, y, beta=beta)
        assert r["measured"] == pytest.approx(0, abs=1e-5) and r["approx"] == pytest.approx(0, abs=1e-4)
        assert r["variance"] > 0.01


def test_calibrated_beta_minimises_the_loss():
    g = torch.Generator().manual_seed(0)
    logits, y = 5 * torch.randn(200, 6, generator=g), torch.randint(0, 6, (200,), generator=g)
    b = landscape.calibrate_beta(logits, y)
    ce = lambda s: float(torch.nn.functional.cross_entropy(s * logits, y))  # noqa: E731
    assert ce(b) <= min(ce(b * 0.9), ce(b * 1.1), ce(1.0)) + 1e-6


def test_plane_grid_frames_every_point_and_matches_the_loop(three):
    model, (t0, t1, t2) = three
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, 32, 32, generator=g), torch.randint(0, 5, (12,), generator=g)
    mid = {k: (a + b) / 2 if a.is_floating_point() else a for k, a, b in zip(t1, t1.values(), t2.values())}
    grid = landscape.plane_grid(model, {"0": t0, "1": t1, "2": t2, "mid": mid}, x, y, x[:8], size=3, progress=False)
    err, xs, ys, proj = grid.error, grid.xs, grid.ys, grid.points
    assert err.shape == (3, 3) and proj["0"] == pytest.approx((0, 0), abs=1e-6)
    for px, py in proj.values():
        assert xs[0] < px < xs[-1] and ys[0] < py < ys[-1]
    pl = landscape.plane(t0, t1, t2, [k for k, _ in model.named_parameters()])
    assert torch.equal(err, landscape.grid_loop(model, pl, xs, ys, x, y, x[:8], progress=False)[0])


def test_point_errors_equal_the_contour_at_each_models_projection(three):
    # issue 15: the printed errors of the plane's models must be what the contour shows at their projections
    model, (t0, t1, t2) = three
    g = torch.Generator().manual_seed(3)
    x, y, x_bn = torch.randn(12, 3, 32, 32, generator=g), torch.randint(0, 5, (12,), generator=g), torch.randn(8, 3, 32, 32, generator=g)
    mid = {k: (a + b) / 2 if a.is_floating_point() else a for k, a, b in zip(t1, t1.values(), t2.values())}
    points = {"0": t0, "1": t1, "2": t2, "mid": mid}
    pl = landscape.plane(t0, t1, t2, [k for k, _ in model.named_parameters()])
    errs = landscape.point_errors(model, points, x, y, x_bn)
    for name, (px, py) in {n: pl.project(sd) for n, sd in points.items()}.items():
        assert errs[name] == landscape.grid_loop(model, pl, [px], [py], x, y, x_bn, progress=False)[0].item(), name
    # without recomputed statistics the soup keeps its own averaged running statistics: another convention
    assert landscape.point_errors(model, {"mid": mid}, x, y)["mid"] == landscape.evaluate(model, mid, x, y)[0]
