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
