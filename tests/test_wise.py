"""Lesson 05's evaluation helpers: WiSE-FT's logits (each model once), the complementarity analysis, the
output-space ensemble, and the hyper-parameter figure."""
import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from fmcls_lib import finetune as ft, plots, training, weights  # noqa: E402


def test_output_ensemble_mixes_logits():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    assert torch.equal(weights.output_ensemble([z0, z1], [0.7, 0.3]), 0.7 * z0 + 0.3 * z1)
    with pytest.raises(ValueError, match="one coefficient per logits"):
        weights.output_ensemble([z0, z1], [1.0])


def test_margin_and_complementarity_by_hand():
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5], [1.0, 0.0, 0.5], [0.0, 0.0, 4.0]])
    f1 = torch.tensor([[0.0, 2.0, 0.0], [0.0, 3.0, 0.0], [0.0, 1.0, 0.9], [1.0, 0.0, 0.0]])
    mix = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 2])
    torch.testing.assert_close(weights.margin(z), torch.tensor([2.0, 0.5, 0.5, 4.0]))
    c = weights.complementarity(z, f1, mix, y)
    # disagreements: images 0 (z 0, f 1), 2 (z 0, f 1), 3 (z 2, f 0); one of them right on 0, 2 and 3
    assert c["disagree"] == 0.75 and c["diversity"] == 0.75
    assert c["zero-shot overrides", "share of disagreements"] == pytest.approx(2 / 3)   # images 0 and 3
    assert c["zero-shot is overridden", "share of disagreements"] == pytest.approx(1 / 3)  # image 2
    assert c["zero-shot is overridden", "zero-shot margin"] == pytest.approx(0.5)
    assert c["zero-shot is overridden", "fine-tuned margin"] == pytest.approx(0.1, abs=1e-6)
    table = weights.complementarity_table([c, c])
    assert list(table.index) == ["zero-shot overrides", "zero-shot is overridden"]
    assert table.loc["zero-shot is overridden", "zero-shot margin"] == pytest.approx(0.5)


class _Run:
    def __init__(self, sd, **recipe):
        self.state_dict, self.recipe = sd, recipe


def test_wise_logits_lc_is_the_head_mix_and_e2e_goes_through_the_network(micro):
    g = torch.Generator().manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(5, 32, generator=g), dim=-1)
    model = ft.from_zero_shot(micro, W)
    theta_0 = training.state_dict(model)
    theta_1 = {k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
               for k, v in theta_0.items()}
    x = {"photo": torch.randn(6, 3, 32, 32, generator=g), "sketch": torch.randn(6, 3, 32, 32, generator=g)}
    feats = {"test": {d: ft.predict(model, v, features=True) for d, v in x.items()}}
    sub = {d: torch.tensor([1, 4]) for d in x}
    wl = weights.WiseLogits(model, theta_0, {"test": x}, feats, sub)
    run = _Run(theta_1, lr=1.0)
    for d in x:
        torch.testing.assert_close(wl("e2e_ft", run, 0.0)[d], weights.head_logits(feats["test"][d], theta_0))
        mixed = weights.logits_of(model, weights.wise(theta_0, theta_1, 0.3), x)[d]
        torch.testing.assert_close(wl("e2e_ft", run, 0.3)[d], mixed)
        torch.testing.assert_close(wl("e2e_ft", run, 0.6, subset=True)[d],
                                   weights.logits_of(model, weights.wise(theta_0, theta_1, 0.6), x)[d][sub[d]])
        lc = 0.7 * weights.head_logits(feats["test"][d], theta_0) + 0.3 * weights.head_logits(feats["test"][d], theta_1)
        torch.testing.assert_close(wl("lc_ft", run, 0.3)[d], lc)
    first = wl("e2e_ft", run, 0.3)
    assert wl("e2e_ft", run, 0.3) is first                           # evaluated once, then looked up
    assert {d: v[sub[d]] for d, v in first.items()}.keys() == wl("e2e_ft", run, 0.3, subset=True).keys()


def test_hyperparameter_figure_draws_one_arrow_per_fine_tune():
    sweep = {f"s{i}": {0.5: {"photo": 0.8, "ood": 0.6 + i / 100}, 1.0: {"photo": 0.9, "ood": 0.5}} for i in range(3)}
    fig = plots.hyperparameter_arrows(sweep, {"photo": 0.7, "ood": 0.65})
    ax = fig.axes[0]
    assert len([c for c in ax.texts]) == 3 and ax.get_ylabel() == "OOD (mean of shifts)"
    assert plots.hyperparameter_arrows(sweep, {"photo": 0.7, "ood": 0.65}, ood="photo").axes[0].get_ylabel() \
        == "photo test (no shift domain)"
    paths = {"a": ("tab:red", [{0.0: 0.5, 1.0: 0.7}, {0.0: 0.6, 1.0: 0.8}])}
    ax = plots.alpha_paths(paths, [0.0, 1.0]).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.55, 0.75])
    plots.plt.close("all")
