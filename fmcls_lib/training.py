"""Training: the one loop every trained head and classifier of the course runs, and the learning-rate schedule
fine-tuning and pre-training share.

:func:`fit` runs epochs of optimiser steps on the losses its caller supplies, scores the model on validation after
each epoch and keeps the epoch best there (or the last one): "the epoch is chosen on validation" of CLIP-Adapter,
Tip-Adapter-F and CaFo (:func:`fmcls_lib.heads.train_on_views`), the synthetic-data heads
(:func:`fmcls_lib.synthetic.train_head`) and WiSE-FT's fine-tunes (:func:`fmcls_lib.finetune.finetune`).
:func:`warmup_cosine` is the linear warm-up then cosine decay of fine-tuning and of the pre-training recipes
(CLIP, DINO, the diffusion model).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import UnknownNameError

KEEP = ("best", "last")


@dataclass
class Fit:
    """What a training run kept (chosen on validation), and what it cost."""
    best_epoch: int
    val_accuracy: float
    history: list  # per epoch: {"epoch", "loss" (mean over its steps), "val" (None where it was not scored)}
    seconds: float
    epochs: int
    state_dict: dict | None = None  # the kept epoch's weights (a CPU copy, :func:`state_dict`)
    recipe: dict = field(default_factory=dict)  # a fine-tune's ``finetune.Recipe``, as a dict


def state_dict(model: torch.nn.Module) -> dict:
    """A CPU copy of ``model``'s state dict (what runs return and the cache stores; ``weights.combine`` mixes them)."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def warmup_cosine(optimizer, warmup: int, total: int, floor: float = 0.0):
    """``torch.optim.lr_scheduler.LambdaLR`` stepped once per optimiser step: the rate rises linearly over the
    first ``warmup`` steps, then follows a half cosine down to ``floor`` times the base rate at step ``total``
    (and stays there)."""
    mid, half = (1 + floor) / 2, (1 - floor) / 2

    def factor(s):
        return min(1.0, (s + 1) / max(1, warmup)) * (mid + half * math.cos(math.pi * min(1.0, s / total)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(model: torch.nn.Module, optimizer, epoch_losses, evaluate, epochs: int, scheduler=None,
        clip_grad: float | None = None, keep: str = "best", on_step=None, progress: bool = False,
        desc: str = "training", started: float | None = None) -> Fit:
    """Train ``model`` for ``epochs`` epochs and load the kept epoch's weights back into it.

    ``epoch_losses(epoch)`` yields the epoch's losses, one per optimiser step (a generator draws each batch when
    the loop asks for it; ``model`` is in train mode).  Each loss is followed by a step of ``optimizer`` (gradients
    clipped to norm ``clip_grad`` first), of ``scheduler`` and ``on_step(model)``.  ``scheduler``: an LR
    scheduler, or ``epoch -> scheduler`` (asked at the start of each epoch: a schedule that is handed over
    mid-run).  ``evaluate()`` is the validation accuracy (model in eval mode, no gradients): after every epoch
    with ``keep="best"``, which keeps the best one (the first of ties); after the last only with ``keep="last"``.
    ``started``: the ``time.perf_counter()`` the run's clock starts from (default: now).
    """
    if keep not in KEEP:
        raise UnknownNameError("keep", keep, KEEP)
    t0 = time.perf_counter() if started is None else started
    params = [p for group in optimizer.param_groups for p in group["params"]]
    best, history = (-1.0, None, -1), []
    bar = tqdm(range(epochs), disable=not progress, desc=desc, leave=False)
    for epoch in bar:
        sched = scheduler(epoch) if callable(scheduler) else scheduler
        model.train()
        losses = []
        for loss in epoch_losses(epoch):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_grad)
            optimizer.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step(model)
        val = None
        if keep == "best" or epoch == epochs - 1:
            model.eval()
            with torch.no_grad():
                val = float(evaluate())
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val": val})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val="-" if val is None else f"{val:.3f}")
        if keep == "last" and epoch == epochs - 1 or keep == "best" and val > best[0]:
            best = (val, state_dict(model), epoch)
    model.load_state_dict(best[1])
    return Fit(best[2], best[0], history, time.perf_counter() - t0, epochs, best[1])
