"""Soup ingredients and the trajectories they come from (model soups, Wortsman et al., ICML 2022; lesson 06).

Ingredients are fine-tunes of one zero-shot initialisation under sampled recipes (:func:`sample_recipes`,
:func:`train_ingredients`), each cached on disk and its epoch chosen on :func:`selection_split`.  Along one run's own
trajectory: its EMA and SWA averages (:func:`averaged_run`).  Across runs: Frankle et al. (2020)'s shared-prefix
study of when two runs still average well (:func:`shared_prefix_study`, from the zero-shot start or
:func:`from_scratch`).  The soups themselves (uniform, greedy, learned) are :mod:`fmcls_lib.weights`' sums.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import cache, executors
from .errors import UnknownNameError
from .finetune import ImageClassifier, Recipe, batches, device_of, finetune, first_per_class, from_zero_shot
from .heads import logit_scale
from .landscape import evaluate
from .training import Fit, state_dict
from .weights import combine


def sample_recipes(n: int, seed: int = 0, lr=(3e-4, 2e-3), epochs=(8, 16)) -> list[Recipe]:
    """A random hyper-parameter sweep for soup ingredients (model soups' "random" grid): learning rate
    (log-uniform in ``lr``), weight decay, epochs, label smoothing, augmentation, mixup and seed."""
    rng = np.random.default_rng(seed)
    return [Recipe(mode="e2e", lr=float(np.exp(rng.uniform(np.log(lr[0]), np.log(lr[1])))),
                   weight_decay=float(rng.choice([0.0, 0.01, 0.1])), epochs=int(rng.integers(epochs[0], epochs[1] + 1)),
                   label_smoothing=float(rng.choice([0.0, 0.1])), augment=float(rng.choice([0.0, 0.5])),
                   mixup=float(rng.choice([0.0, 0.0, 0.2])), seed=int(rng.integers(1000)))
            for _ in range(n)]


def stable_lr_range(lrs, gain, scores) -> tuple[float, float]:
    """The widest run of consecutive grid learning rates ``lrs`` (ascending) inside which every pair's soup is at
    least as good on held-out as the best model with a rate between them: ``gain[a][b]`` (``a < b``; the held-out
    accuracy of the two models' average minus the best model with a rate in ``[lrs[a], lrs[b]]``, Figure F.1's
    quantity) is ``>= 0`` for every pair in it.  Among equally wide runs, the one with the larger mean gain, then
    the lower rates.  When no pair is stable: the single rate whose model ``scores`` best on held-out.  Returns
    ``(lowest, highest)`` rate."""
    if not len(lrs):
        raise ValueError("stable_lr_range needs at least one grid learning rate")
    g = np.asarray(gain, dtype=float)
    best = (0, -np.inf, 0), int(np.argmax(scores)), int(np.argmax(scores))
    for i in range(len(lrs)):
        for j in range(i + 1, len(lrs)):
            inside = [g[a, b] for a in range(i, j + 1) for b in range(a + 1, j + 1)]
            if all(v >= 0 for v in inside):
                best = max(best, ((j - i, float(np.mean(inside)), -i), i, j))
    _, i, j = best
    return float(lrs[i]), float(lrs[j])


SELECT_PER_CLASS = 25  # photo validation images per class the best epoch is chosen on (the split's former size)


def selection_split(X) -> tuple:
    """The part of photo validation a run's epoch is chosen on: its first ``SELECT_PER_CLASS`` images per class
    (scoring all of it after every epoch would cost more than a quarter of each epoch; claims use all of it)."""
    x, y = X["val", "photo"]
    idx = first_per_class(y, SELECT_PER_CLASS)
    return x[idx], torch.as_tensor(y)[idx]


def _run_key(backbone, W, recipe: Recipe, X, **extra) -> dict:
    """Disk-cache key of one fine-tuning run: backbone weights, head, recipe, train-set and selection-set sizes,
    plus ``extra``."""
    return {"backbone": backbone.id, "W": cache.key_digest({"W": W.tolist()}), "recipe": asdict(recipe),
            "train": int(len(X["train", "photo"][1])), "select": int(len(selection_split(X)[1])), **extra}


def _ingredient_job(shared, job):
    """One soup ingredient (an executor job): fine-tune a copy of ``theta_0`` and write it to the cache."""
    model_0, data, cache_root = shared
    key, recipe = job
    os.environ["FMCLS_CACHE"] = cache_root  # a Ray worker writes where the driver reads
    res = finetune(copy.deepcopy(model_0), recipe, *data, progress=False)
    cache.put("ingredients", key, {"state_dict": res.state_dict, "best_epoch": res.best_epoch,
                                   "val": res.val_accuracy, "seconds": res.seconds, "history": res.history})
    return key


def train_ingredients(backbone, W, recipes, X, task: str, progress: bool = True, executor=None) -> list[Fit]:
    """Fine-tune one model per recipe from the same zero-shot initialisation (a soup's ingredients, a lesson's
    fine-tunes over seeds).  Each one is cached on disk under its recipe, so a re-run (or a sweep that crashed
    half-way) only trains the missing ones, and two lessons asking for the same recipe share one run.  ``X`` as from
    :func:`load_images`; the epoch is chosen on :func:`selection_split`; ``executor`` (see
    :mod:`fmcls_lib.executors`): ``None`` trains them here one by one, ``"ray"`` / ``"ray://host:port"`` as Ray
    tasks that write their checkpoints to ``$FMCLS_CACHE``."""
    keys = [_run_key(backbone, W, r, X, task=task) for r in recipes]
    found = {i: cache.get("ingredients", k) for i, k in enumerate(keys)}
    todo = [i for i, d in found.items() if d is None]
    if todo:
        # on the CPU: a worker may see no GPU (Ray's num_gpus=0), and finetune moves the model to its device itself
        shared = (from_zero_shot(backbone, W).cpu(), (*X["train", "photo"], *selection_split(X)), str(cache.cache_dir()))
        executors.get(executor).map(_ingredient_job, shared, [(keys[i], recipes[i]) for i in todo],
                                    desc="soup ingredients", progress=progress)
        for i in todo:
            found[i] = cache.get("ingredients", keys[i])
            if found[i] is None:
                raise RuntimeError(f"ingredient {i} was trained but its checkpoint is not in {cache.cache_dir()}; "
                                   "with a Ray cluster, every node must see the same $FMCLS_CACHE")
    return [Fit(d["best_epoch"], d["val"], d.get("history", []), d["seconds"], r.epochs, d["state_dict"], asdict(r))
            for d, r in zip((found[i] for i in range(len(recipes))), recipes)]


def averaged_run(backbone, W, recipe: Recipe, X, ema_decay: float = 0.99, swa_start: float = 0.5,
                 swa_lr: float | None = None, progress: bool = True) -> dict:
    """One fine-tuning run with weight averages along its own trajectory (``torch.optim.swa_utils``):
    EMA of every step (``get_ema_multi_avg_fn``) and SWA, the uniform average of the iterates at the
    end of each epoch from ``swa_start`` of training on.  BatchNorm statistics follow each method: the EMA
    averages them with the weights (``AveragedModel(use_buffers=True)``, an EMA of the running statistics); SWA's
    are recomputed on the train images with ``update_bn`` (SWA's own step: the average of the weights never ran).  With ``swa_lr`` the learning rate switches to ``SWALR`` at ``swa_start`` (SWA's own
    recipe: a constant rate while averaging); without it the run keeps its cosine schedule.
    Returns ``{"last", "best_val", "ema", "swa"}`` state dicts (same architecture), cached on disk."""
    key = _run_key(backbone, W, recipe, X, averaged={"ema_decay": ema_decay, "swa_start": swa_start, "swa_lr": swa_lr})
    return cache.get_or_compute("averaged", key, lambda: _averaged_run(backbone, W, recipe, X, ema_decay, swa_start,
                                                                       swa_lr, progress))


def _averaged_run(backbone, W, recipe, X, ema_decay, swa_start, swa_lr, progress) -> dict:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

    model = from_zero_shot(backbone, W)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    swa = AveragedModel(model)
    steps_per_epoch = math.ceil(len(X["train", "photo"][0]) / recipe.batch_size)
    first_swa_epoch = math.ceil(swa_start * recipe.epochs)
    state = {"step": 0, "last": None}

    def on_step(m):
        state["step"] += 1
        ema.update_parameters(m)
        if state["step"] % steps_per_epoch == 0 and state["step"] // steps_per_epoch > first_swa_epoch:
            swa.update_parameters(m)  # end of each epoch run under the SWA schedule
        if state["step"] == recipe.epochs * steps_per_epoch:
            state["last"] = state_dict(m)

    res = finetune(model, recipe, *X["train", "photo"], *selection_split(X), progress=progress, on_step=on_step,
                   swa=None if swa_lr is None else (first_swa_epoch, swa_lr))
    update_bn(batches(X["train", "photo"][0], 256), swa, device=device_of(model))
    return {"last": state["last"], "best_val": res.state_dict, "ema": state_dict(ema.module),
            "swa": state_dict(swa.module)}


def from_scratch(backbone, W: torch.Tensor, seed: int = 0) -> ImageClassifier:
    """The zero-shot classifier's architecture with every layer re-initialised (no pre-training); the head
    gets random unit rows times the logit scale, so logits have the pre-trained model's range."""
    torch.manual_seed(seed)
    model = from_zero_shot(backbone, W)
    for m in model.image_encoder.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    with torch.no_grad():
        model.head.weight.copy_(logit_scale(backbone) * F.normalize(torch.randn_like(model.head.weight), dim=-1))
    return model


def shared_prefix_study(backbone, W, recipe: Recipe, X, shared_epochs, init: str = "zero_shot",
                        child_seed: int = 12345, child_init_seed: int | None = None, split: str = "val",
                        progress: bool = True) -> dict:
    """Frankle et al. (2020)'s linear-interpolation instability: a parent run (``recipe``) and, for each
    ``k`` in ``shared_epochs``, a child that shares the parent's initialisation and its first ``k`` epochs
    (same data order), then continues with another data order.  Both last iterates and their average
    are scored on ``X[split, "photo"]`` (BatchNorm statistics recomputed on the train images for all three).
    ``init``: ``"zero_shot"`` (the pre-trained start every soup uses) or ``"scratch"`` (same architecture, random
    weights).  ``child_init_seed`` (scratch only, ``shared_epochs=[0]``): the child starts from *another* random
    initialisation — two fully independent runs.  A child that shares every epoch *is* the parent (its branch
    never happens), so it is not trained again.  Runs are cached on disk.

    Returns ``{k: {"parent", "child", "average", "barrier"}}`` with ``barrier`` = mean of the two endpoints
    minus the average's accuracy (> 0: averaging loses accuracy).
    """
    if init not in ("zero_shot", "scratch"):
        raise UnknownNameError("init", init, ("zero_shot", "scratch"))
    bad = [k for k in shared_epochs if not 0 <= int(k) <= recipe.epochs]
    if bad:
        raise ValueError(f"shared_epochs {bad} outside [0, {recipe.epochs}] (the recipe's epochs)")
    if child_init_seed is not None and (init != "scratch" or list(shared_epochs) != [0]):
        raise ValueError("child_init_seed needs init='scratch' and shared_epochs=[0] (independent runs share nothing)")

    def start(seed=recipe.seed):
        return from_zero_shot(backbone, W) if init == "zero_shot" else from_scratch(backbone, W, seed)

    model = start()
    score = lambda sd: 1.0 - evaluate(model, sd, *X[split, "photo"], X["train", "photo"][0])[0]  # noqa: E731

    def run(branch):
        seed = recipe.seed if branch is None or child_init_seed is None else child_init_seed
        key = _run_key(backbone, W, recipe, X, init=init, init_seed=seed, branch=branch)
        return cache.get_or_compute("branches", key, lambda: finetune(
            start(seed), recipe, *X["train", "photo"], *selection_split(X), progress=False, keep="last",
            branch=branch).state_dict)

    bar = tqdm([None] + [(int(k), child_seed) for k in shared_epochs if int(k) < recipe.epochs], disable=not progress,
               desc=f"shared-prefix runs ({init})", leave=False)
    runs = {b: run(b) for b in bar}
    runs.update({(recipe.epochs, child_seed): runs[None]} if recipe.epochs in map(int, shared_epochs) else {})
    parent = score(runs[None])
    out = {}
    for k in shared_epochs:
        child = runs[int(k), child_seed]
        avg = score(combine([runs[None], child], [0.5, 0.5]))
        c = score(child)
        out[int(k)] = {"parent": parent, "child": c, "average": avg, "barrier": (parent + c) / 2 - avg}
    return out
