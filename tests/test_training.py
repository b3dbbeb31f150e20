"""The one training loop (keep best / last, history, schedule hand-over) and the warm-up + cosine schedule."""
import math

import pytest
import torch

from fmcls_lib import training
from fmcls_lib.errors import UnknownNameError


def _run(keep="best", vals=(0.5, 0.7, 0.7, 0.6), scheduler=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scores, weights = iter(vals), []

    def losses(epoch):
        assert model.training
        for _ in range(2):
            yield model(torch.ones(4, 3)).pow(2).mean()

    def evaluate():
        assert not model.training and not torch.is_grad_enabled()
        weights.append(model.weight.detach().clone())
        return next(scores)

    return model, weights, training.fit(model, opt, losses, evaluate, len(vals), scheduler=scheduler, keep=keep)


def test_fit_keeps_the_first_best_epoch_and_loads_it_back():
    model, weights, fit = _run()
    assert (fit.best_epoch, fit.val_accuracy, fit.epochs) == (1, 0.7, 4)
    assert [h["val"] for h in fit.history] == [0.5, 0.7, 0.7, 0.6] and all(h["loss"] > 0 for h in fit.history)
    assert torch.equal(model.weight, weights[1]) and torch.equal(fit.state_dict["weight"], weights[1])


def test_fit_keep_last_scores_once():
    model, weights, fit = _run("last", vals=(0.1,))
    assert len(weights) == 1 and fit.best_epoch == 0 and fit.val_accuracy == 0.1
    with pytest.raises(UnknownNameError, match="unknown keep 'final'; accepted: best, last"):
        _run("final")


def test_fit_asks_for_the_scheduler_every_epoch():
    asked = []

    def schedule(epoch):
        asked.append(epoch)
        return None

    _run(scheduler=schedule)
    assert asked == [0, 1, 2, 3]


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_warmup_cosine_rises_linearly_then_decays_to_its_floor(floor):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, lrs = training.warmup_cosine(opt, 4, 20, floor=floor), []
    for _ in range(24):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.25 * (floor + (1 - floor) * (1 + math.cos(math.pi * s / 20)) / 2) * (s + 1)
                                     for s in range(3)])
    assert max(lrs) == lrs[3] and lrs[20:] == pytest.approx([floor] * 4, abs=1e-12)
