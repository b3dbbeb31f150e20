"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022), with selection on validation only.

Notation of the lecture's slides (and of the paper's eq. 6): the few-shot cache has keys
``F_train`` (``[N, D]``, L2-normalised image features) and values ``L_train`` (``[N, C]``, one-hot labels);
for a test feature ``f``

    logits = 100 * f @ W.T + alpha * exp(-beta * (1 - f @ F_train.T)) @ L_train

where 100 is CLIP's logit scale (``scale``: the backbone's own, see ``heads.logit_scale``).

``alpha`` is the residual ratio (how much the cache adds to zero-shot CLIP), ``beta`` the sharpness of the
affinity.  The official code uses the same two names for the same two roles (``init_alpha``,
``init_beta``).  Its ``main.py`` (the script the lecture links) searches alpha/beta on the validation
features; its ``main_imagenet.py`` searches them on the test features; Tip-Adapter-F's best epoch is taken
on test in both (and ``main.py`` prints the larger of two test accuracies: the best epoch's, and the one after
its validation search).  CaFo's official code does the same and reports the better of two test-selected
numbers.  Here every choice is made on a validation split, and no function on the selection path takes
test data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .heads import LOGIT_SCALE, accuracy, single_threaded, train_on_views
from .training import Fit


@dataclass
class Cache:
    keys: torch.Tensor  # [N, D] normalised
    values: torch.Tensor  # [N, C] one-hot

    @property
    def num_classes(self) -> int:
        return self.values.shape[1]


def build_cache(views: torch.Tensor, labels, num_classes: int) -> Cache:
    """Keys = normalised mean over augmented views (``[E, N, D]``) or plain features ``[N, D]``.

    (The official code averages un-normalised features; ours are normalised per view first, which
    differs only in the weight each view gets.)
    """
    keys = views.mean(0) if views.ndim == 3 else views
    return Cache(F.normalize(keys, dim=-1), F.one_hot(torch.as_tensor(labels), num_classes).float())


def logits(f: torch.Tensor, cache: Cache, W: torch.Tensor, alpha: float, beta: float,
           keys: torch.Tensor | None = None, scale: float = LOGIT_SCALE) -> torch.Tensor:
    """Tip-Adapter logits (paper eq. 6); ``keys`` overrides the cache keys (Tip-Adapter-F)."""
    A = f @ (cache.keys if keys is None else keys).T
    return scale * f @ W.T + alpha * torch.exp(-beta * (1 - A)) @ cache.values


def official_grid(search_scale=(7, 3), search_step=(200, 20)):
    """The official search grid: ``betas`` over [0.1, scale_0), ``alphas`` over [0.1, scale_1)."""
    def axis(scale, steps):
        return torch.tensor([i * (scale - 0.1) / steps + 0.1 for i in range(steps)])
    return axis(search_scale[0], search_step[0]), axis(search_scale[1], search_step[1])


@dataclass
class Search:
    alpha: float
    beta: float
    accuracy: float
    grid: torch.Tensor  # [len(betas), len(alphas)] validation accuracy
    betas: torch.Tensor
    alphas: torch.Tensor


def grid_accuracy(f, y, cache: Cache, W, betas, alphas, keys=None, scale: float = LOGIT_SCALE,
                  max_elems: int = 2**21):
    """Accuracy of every (beta, alpha) pair, ``[B, A]``, batched over the whole grid.

    For one beta, image ``n`` with label ``y`` is classified correctly at ``alpha`` iff for every other
    class ``c``:  ``(base_y - base_c) + alpha * (cache_y - cache_c) > 0`` -- a half-line in alpha.  So each
    image is right on an interval ``lo < alpha < hi``, and all alphas are scored by comparing against
    that interval instead of materialising ``[B, A, N, C]`` logits.  Betas go in chunks of at most
    ``max_elems`` affinities, which keeps the ``exp`` in cache (the search is memory-bound).
    """
    y = torch.as_tensor(y)
    base = scale * f @ W.T  # [N, C]
    E = 1 - f @ (cache.keys if keys is None else keys).T  # [N, M]
    gap = base.gather(1, y[:, None]) - base  # base_y - base_c
    other = torch.arange(base.shape[1])[None] != y[:, None]
    out, chunk = [], max(1, max_elems // E.numel())
    buf = torch.empty(min(chunk, len(betas)), *E.shape)  # reused: the search is memory-bound
    for b in torch.split(betas, chunk):
        A = torch.mul(E, -b[:, None, None], out=buf[: len(b)]).exp_()
        cache_logits = A @ cache.values  # [b, N, C]
        slope = cache_logits.gather(2, y[None, :, None].expand(len(b), -1, 1)) - cache_logits
        thresh = -gap / slope
        lo = torch.where(other & (slope > 0), thresh, -torch.inf).amax(-1)  # [b, N]
        hi = torch.where(other & (slope < 0), thresh, torch.inf).amin(-1)
        never = (other & (slope == 0) & (gap <= 0)).any(-1)
        a = alphas[None, :, None]
        out.append(((a > lo[:, None]) & (a < hi[:, None]) & ~never[:, None]).float().mean(-1))
    return torch.cat(out)


@single_threaded()
def search(f_val, y_val, cache: Cache, W, betas=None, alphas=None, keys=None,
           scale: float = LOGIT_SCALE) -> Search:
    """(alpha, beta) with the best validation accuracy over the grid; ties go to the first pair in
    the official loop order (beta outer, alpha inner), as its ``acc > best_acc`` update does."""
    if betas is None or alphas is None:
        betas, alphas = official_grid()
    grid = grid_accuracy(f_val, y_val, cache, W, betas, alphas, keys, scale)
    i = int(torch.argmax(grid.flatten()))  # first maximum in row-major order
    b, a = divmod(i, len(alphas))
    return Search(float(alphas[a]), float(betas[b]), float(grid[b, a]), grid, betas, alphas)


def search_loop(f_val, y_val, cache: Cache, W, betas, alphas, keys=None,
                scale: float = LOGIT_SCALE) -> tuple[float, float, float]:
    """The straightforward nested loop the official code runs (reference for tests and benchmarks)."""
    best = (0.0, 0.0, -1.0)
    for beta in betas.tolist():
        for alpha in alphas.tolist():
            acc = accuracy(logits(f_val, cache, W, alpha, beta, keys, scale), y_val)
            if acc > best[2]:
                best = (alpha, beta, acc)
    return best


class LearnableKeys(torch.nn.Module):
    """Tip-Adapter-F: the cache keys become parameters (initialised from the cache); nothing else trains."""

    def __init__(self, cache: Cache):
        super().__init__()
        self.keys = torch.nn.Parameter(cache.keys.clone())


@dataclass
class TipAdapter:
    cache: Cache
    W: torch.Tensor
    alpha: float
    beta: float
    keys: torch.Tensor | None = None  # learned keys of Tip-Adapter-F
    scale: float = LOGIT_SCALE
    fit: Fit | None = None
    search: Search | None = None

    def logits(self, f):
        return logits(f, self.cache, self.W, self.alpha, self.beta, self.keys, self.scale)


@single_threaded()
def fit(views, y_train, W, f_val, y_val, finetune: bool = False, epochs: int = 20, lr: float = 1e-3,
        init_alpha: float = 1.0, init_beta: float = 1.0, grid=None, scale: float = LOGIT_SCALE,
        seed: int = 0) -> TipAdapter:
    """Tip-Adapter (``finetune=False``) or Tip-Adapter-F, every choice made on validation.

    ``views``: ``[E, N, D]`` augmented features of the few-shot train set.  For F, the keys train for
    ``epochs`` with (``init_alpha``, ``init_beta``) as in the official code, the epoch is chosen on
    validation, then (alpha, beta) are searched on validation with the learned keys.
    """
    betas, alphas = grid if grid is not None else official_grid()
    cache = build_cache(views, y_train, W.shape[0])
    keys, result = None, None
    if finetune:
        learn = LearnableKeys(cache)
        result = train_on_views(learn, lambda f: logits(f, cache, W, init_alpha, init_beta, learn.keys, scale),
                                views, y_train, f_val, y_val, epochs=epochs, lr=lr, seed=seed)
        keys = learn.keys.detach()
    s = search(f_val, y_val, cache, W, betas, alphas, keys, scale)
    return TipAdapter(cache, W, s.alpha, s.beta, keys, scale, result, s)


METHODS = ("zero_shot", "linear_probe", "clip_adapter", "tip_adapter", "tip_adapter_f")


@dataclass(frozen=True)
class Comparison:
    """The lesson's comparison of few-shot methods (:func:`compare_methods`)."""
    accuracy: dict  # method -> shots -> domain -> [test accuracy per seed]
    cost: dict  # method -> [{"seconds", "epochs", "best_epoch"} per seed] at the largest shot count
    correct: dict  # method -> shots -> domain -> bool [seeds, n]: which test images each seed's model gets right


@single_threaded()
def compare_methods(S, views_all, W, shots, seeds: int, domains=("photo",), scale: float = LOGIT_SCALE,
                    grid=None, tip_f_epochs: int = 20, clip_adapter_epochs: int = 200,
                    clip_adapter_lr: float = 1e-2, progress: bool = True):
    """The lesson's comparison: every method x shots x seeds, test accuracy per domain.

    ``S[(split, domain)] = (f, y)``; ``views_all``: ``[E, N, D]`` augmented features of the full photo
    train split (each k-shot draw indexes it), or a :class:`fm.features.ShotViews` of the draws.  Everything is selected on photo validation.
    Returns a :class:`Comparison`: ``accuracy[method][k][domain] = [per seed]``, ``cost[method]`` = list of
    ``{"seconds", "epochs", "best_epoch"}`` at the largest ``k`` (one per seed), and
    ``correct[method][k][domain]`` = bool ``[seeds, n]``, which test images each seed's model gets right (the input
    of ``fm.results.beats``; zero-shot, which draws nothing, repeats its one row).
    """
    from tqdm.auto import tqdm

    from . import heads
    from .data import few_shot

    from .features import ShotViews

    f_tr, y_tr = S["train", "photo"]
    f_va, y_va = S["val", "photo"]
    views = views_all if isinstance(views_all, ShotViews) else ShotViews(views_all)
    acc = {m: {k: {} for k in shots} for m in METHODS}
    right = {m: {k: {} for k in shots} for m in METHODS}
    cost = {m: [] for m in METHODS}
    zero_shot = heads.correct_by_domain(lambda f: heads.logits(f, W, scale), S, domains)
    runs = [(k, s) for k in shots for s in range(seeds)]
    for k, seed in tqdm(runs, disable=not progress, desc="shots x seeds"):
        idx = torch.as_tensor(few_shot(y_tr.numpy(), k, seed))
        v, y = views.take(idx.numpy()), y_tr[idx]
        t = time.perf_counter()
        probe = heads.linear_probe(f_tr[idx], y, f_va, y_va)
        probe_s = time.perf_counter() - t
        adapter, ca_fit = heads.clip_adapter(v, y, W, f_va, y_va, epochs=clip_adapter_epochs,
                                             lr=clip_adapter_lr, scale=scale, seed=seed)
        t = time.perf_counter()
        tip = fit(v, y, W, f_va, y_va, grid=grid, scale=scale)
        tip_s = time.perf_counter() - t
        t = time.perf_counter()
        tip_f = fit(v, y, W, f_va, y_va, finetune=True, epochs=tip_f_epochs, grid=grid, scale=scale,
                    seed=seed)
        tip_f_s = time.perf_counter() - t  # its own cache, key training and search: nothing of the plain fit
        fns = {"linear_probe": probe.logits, "clip_adapter": adapter, "tip_adapter": tip.logits,
               "tip_adapter_f": tip_f.logits}
        by_method = {"zero_shot": zero_shot, **{m: heads.correct_by_domain(fn, S, domains) for m, fn in fns.items()}}
        for m, c in by_method.items():
            for d, a in heads.accuracies(c).items():
                acc[m][k].setdefault(d, []).append(a)
            for d, cd in c.items():
                right[m][k].setdefault(d, []).append(cd)
        if k == max(shots):
            cost["zero_shot"].append({"seconds": 0.0, "epochs": 0})
            cost["linear_probe"].append({"seconds": probe_s, "epochs": None})
            cost["clip_adapter"].append({"seconds": ca_fit.seconds, "epochs": ca_fit.epochs,
                                         "best_epoch": ca_fit.best_epoch})
            cost["tip_adapter"].append({"seconds": tip_s, "epochs": 0})
            cost["tip_adapter_f"].append({"seconds": tip_f_s, "epochs": tip_f.fit.epochs,
                                          "best_epoch": tip_f.fit.best_epoch})
    right = {m: {k: {d: np.stack(v) for d, v in r.items()} for k, r in rk.items()} for m, rk in right.items()}
    return Comparison(acc, cost, right)
