"""Fine-tuning CLIP's image encoder as a classifier, as WiSE-FT does (Wortsman et al., CVPR 2022).

The classifier is the CLIP image encoder followed by a linear head on *normalised* features, initialised
from the zero-shot text classifier (``logit_scale * W``).  Two modes: ``"lc"`` trains the head only (the
encoder, BatchNorm statistics included, stays frozen); ``"e2e"`` trains everything.  Training uses the
photo train split; the epoch is chosen on photo validation.

Everything runs on the backbone's device (the GPU when there is one), under ``torch.autocast`` (bfloat16) on CUDA
only, so CPU numbers are plain float32; state dicts are returned and stored on the CPU.  Images: the world's splits
are small uint8 renders, turned into one model-ready tensor each; a real dataset's split is an :class:`ImageStream`
that decodes and preprocesses one image at a time as a ``torch.utils.data.DataLoader`` reads it, so no 224-px split
is ever held in memory.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .backbones import autocast  # noqa: F401  (mixed precision on CUDA only; weights and landscape import it here)
from .heads import logit_scale

MODES = ("lc", "e2e")


class ImageClassifier(torch.nn.Module):
    def __init__(self, image_encoder: torch.nn.Module, head_weight: torch.Tensor):
        super().__init__()
        self.image_encoder = image_encoder
        self.head = torch.nn.Linear(head_weight.shape[1], head_weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(head_weight)
            self.head.bias.zero_()

    def features(self, x):
        return F.normalize(self.image_encoder(x), dim=-1)

    def forward(self, x):
        return self.head(self.features(x))


def from_zero_shot(backbone, W: torch.Tensor) -> ImageClassifier:
    """``theta_0``: a copy of the backbone's image encoder + head ``logit_scale * W`` (zero-shot), in float32 on
    the backbone's device."""
    enc = copy.deepcopy(backbone.model.visual).float()
    return ImageClassifier(enc, logit_scale(backbone) * W.float().cpu()).to(backbone.device)


def state_dict(model: torch.nn.Module) -> dict:
    """A CPU copy of ``model``'s state dict (what runs return and the cache stores; ``weights.combine`` mixes them)."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------------------- streamed images

class ImageStream:
    """Model-ready images of a real (PIL) dataset, decoded and preprocessed (``transform``: the backbone's
    ``preprocess``) one at a time as a ``torch.utils.data.DataLoader`` reads them: CIFAR-10's train split as one
    224-px float tensor would be 27 GB; as a stream it is the dataset's own files plus one batch.

    Used where the world's splits are tensors: ``len(x)``, ``x[idx]`` / ``x[:256]`` (another stream over those
    images), :meth:`batches`; :meth:`tensor` materialises a small one (a plane's held-out subset).
    """

    def __init__(self, dataset, transform, indices=None):
        self.dataset, self.transform = dataset, transform
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, idx):
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        sel = self.indices[idx]
        if np.ndim(sel) == 0:
            raise TypeError("index an ImageStream with a slice or an index array (it yields batches, not one image)")
        return ImageStream(self.dataset, self.transform, sel)

    def batches(self, batch_size: int = 128, batch_sampler=None):
        """Batches of model-ready images ``[b, 3, H, W]``, at most ``features.STREAM_BATCH`` at a time (in order), or
        the index lists of ``batch_sampler`` (``features.stream_loader``)."""
        from .features import Preprocessed, stream_loader
        images = self.dataset.subset(self.indices).images  # decoded one at a time, as the loader asks for them
        yield from stream_loader(Preprocessed(images, self.transform), batch_size, batch_sampler)

    def tensor(self) -> torch.Tensor:
        """All of it as one tensor: for small subsets only (250 images at 224 px: 150 MB)."""
        return torch.cat(list(self.batches())) if len(self) else torch.zeros(0)


def as_tensor(x) -> torch.Tensor:
    """``x`` itself if it is a tensor, the materialised images of an :class:`ImageStream` otherwise."""
    return x.tensor() if isinstance(x, ImageStream) else x


def batches(x, batch_size: int):
    """Consecutive batches of a tensor or an :class:`ImageStream` (on the CPU)."""
    if isinstance(x, ImageStream):
        yield from x.batches(batch_size)
    else:
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size]


@dataclass
class Recipe:
    mode: str = "e2e"
    epochs: int = 10
    lr: float = 3e-4
    weight_decay: float = 0.1
    batch_size: int = 64
    warmup_steps: int = 20
    clip_grad: float = 1.0
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(mixup, mixup) mixing weight; 0 = off
    augment: float = 0.0  # strength of random-resized-crop + flip (0 = off)
    l2_to_init: float = 0.0  # lambda of the "regularise towards zero-shot" baseline
    freeze_bn: bool = False  # BatchNorm layers stay in eval mode: running statistics fixed
    train_fraction: float = 1.0  # e2e: share of the encoder's parameter tensors, from the output end, trained
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"fine-tuning mode {self.mode!r}; accepted: {', '.join(MODES)}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")


@dataclass
class Result:
    state_dict: dict
    best_epoch: int
    val_accuracy: float
    history: list = field(default_factory=list)  # per epoch: {"epoch", "loss", "val"}
    seconds: float = 0.0
    recipe: dict = field(default_factory=dict)


def _trainable(model: ImageClassifier, mode: str, fraction: float = 1.0):
    enc = list(model.image_encoder.parameters())
    first = len(enc) - math.ceil(fraction * len(enc))
    for i, p in enumerate(enc):
        p.requires_grad_(mode == "e2e" and i >= first)
    return [p for p in model.parameters() if p.requires_grad]


def trainable_parameters(model: ImageClassifier, recipe: "Recipe") -> int:
    """How many parameters ``recipe`` trains in ``model`` (the head included)."""
    n = sum(p.numel() for p in _trainable(model, recipe.mode, recipe.train_fraction))
    for p in model.parameters():
        p.requires_grad_(True)
    return n


def _freeze_bn(model: torch.nn.Module):
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def inference_net(model: torch.nn.Module, part: str = "model") -> torch.nn.Module:
    """An evaluation copy of ``model`` (or of its ``image_encoder`` with ``part="encoder"``): BatchNorm folded
    into the convolutions (``torch.fx.experimental.optimization.fuse``) and channels-last memory, which is
    about twice as fast on a CPU; the eval-mode module itself where the graph cannot be traced."""
    from torch.fx.experimental.optimization import fuse

    net = (model.image_encoder if part == "encoder" else model).eval()
    try:
        net = fuse(net)  # a copy: the model's own modules are left alone
    except Exception:  # noqa: BLE001  (e.g. a transformer fx cannot trace: evaluate it as it is)
        return net
    return net.to(memory_format=torch.channels_last)


FUSE_FROM = 512  # images: below this, folding BatchNorm costs more than it saves


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024, features: bool = False) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode (or, with ``features=True``, its normalised image features),
    computed on the model's device under ``torch.inference_mode`` (through :func:`inference_net` for
    ``FUSE_FROM`` images or more); returned on the CPU."""
    model.eval()
    dev = device_of(model)
    part = "encoder" if features else "model"
    net = inference_net(model, part) if len(x) >= FUSE_FROM else (model.image_encoder if features else model)
    out = []
    with torch.inference_mode(), autocast(dev):
        for xb in batches(x, batch_size):
            o = net(xb.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last))
            out.append((F.normalize(o.float(), dim=-1) if features else o).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _augment(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    from .features import augment

    return x if strength <= 0 else augment(x, x.shape[-1], gen, scale=(1 - 0.5 * strength, 1.0))


def finetune(model: ImageClassifier, recipe: Recipe, x_train, y_train, x_val, y_val,
             progress: bool = True, on_step=None, keep: str = "best", branch: tuple | None = None,
             swa: tuple | None = None, device: str = "auto") -> Result:
    """Fine-tune ``model`` in place (AdamW, linear warm-up then cosine, gradient clipping).

    ``x_*`` are model-ready image tensors.  With ``keep="best"`` the model is scored on the validation split
    after each epoch and the best epoch's weights are loaded back and returned as ``Result.state_dict``; with
    ``keep="last"`` the last iterate's (scored once, after the last epoch).  LC without augmentation or
    mixup sees the frozen encoder's features only, so they are computed once and the head trains on them
    (the same steps as running the encoder every time, much faster).  ``on_step(model)`` is called after every
    optimiser step (EMA / SWA averaging hooks in here).  ``branch=(epoch, seed)`` re-seeds the data order (and augmentation /
    mixup draws) from that epoch on: the run shares its first ``epoch`` epochs with the run of
    ``recipe.seed`` and then takes its own path (Frankle et al.'s instability analysis).
    ``swa=(epoch, swa_lr)`` hands the learning rate from that epoch on to ``torch.optim.swa_utils.SWALR``
    (cosine annealing over one epoch to the constant ``swa_lr``), as Stochastic Weight Averaging trains.
    Training runs on ``device`` (``"auto"``: the GPU when there is one); returned weights are on the CPU.
    """
    from .backbones import pick_device

    if keep not in ("best", "last"):
        raise ValueError(f"keep={keep!r}; accepted: 'best', 'last'")
    dev = pick_device(device)
    model.to(dev)
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    y_train, y_val = torch.as_tensor(y_train).cpu(), torch.as_tensor(y_val).cpu()
    params = _trainable(model, recipe.mode, recipe.train_fraction)
    theta_0 = [p.detach().clone() for p in params] if recipe.l2_to_init else None
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, recipe.warmup_steps))
                                              * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    best = (-1.0, None, -1)
    history, t0 = [], time.perf_counter()
    on_features = recipe.mode == "lc" and recipe.augment <= 0 and recipe.mixup <= 0
    if on_features:
        x_train, x_val = predict(model, x_train, features=True), predict(model, x_val, features=True)
        forward = model.head
    else:
        model.to(memory_format=torch.channels_last)  # faster convolutions on a CPU; the weights are the same
        forward = model
    def score():
        if on_features:
            with torch.no_grad():
                out = torch.cat([model.head(x_val[i:i + 1024].to(dev)).cpu() for i in range(0, len(x_val), 1024)])
        else:
            out = predict(model, x_val)
        return float((out.argmax(1) == y_val).float().mean())

    snapshot = lambda: state_dict(model)  # noqa: E731
    bar = tqdm(range(recipe.epochs), disable=not progress, desc=f"fine-tuning ({recipe.mode})", leave=False)
    for epoch in bar:
        if branch is not None and epoch == branch[0]:
            gen.manual_seed(int(branch[1]))
        if swa is not None and epoch == swa[0]:
            from torch.optim.swa_utils import SWALR

            sched = SWALR(opt, swa_lr=swa[1], anneal_epochs=steps_per_epoch, anneal_strategy="cos")
        model.train()
        if recipe.mode == "lc":
            model.image_encoder.eval()  # frozen encoder: BatchNorm statistics stay the zero-shot ones
        if recipe.freeze_bn:
            _freeze_bn(model)
        losses = []
        order = torch.randperm(len(x_train), generator=gen).split(recipe.batch_size)
        streamed = isinstance(x_train, ImageStream)  # decoded batch by batch, in this epoch's order
        for idx, xb in zip(order, x_train.batches(batch_sampler=[i.tolist() for i in order]) if streamed
                           else (x_train[i] for i in order)):
            x, y = _augment(xb, recipe.augment, gen).to(dev, non_blocking=True), y_train[idx].to(dev)
            if not on_features:
                x = x.contiguous(memory_format=torch.channels_last)
            target = F.one_hot(y, model.head.out_features).float()
            if recipe.mixup > 0:
                lam = float(np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen))).beta(
                    recipe.mixup, recipe.mixup))
                perm = torch.randperm(len(x), generator=gen).to(dev)
                x, target = lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm]
            with autocast(dev):
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=recipe.label_smoothing)
            if theta_0 is not None:
                loss = loss + recipe.l2_to_init * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, theta_0))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, recipe.clip_grad)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step(model)
        val = score() if keep == "best" or epoch == recipe.epochs - 1 else None
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val": val})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val="-" if val is None else f"{val:.3f}")
        if keep == "last" and epoch == recipe.epochs - 1 or keep == "best" and val > best[0]:
            best = (val, snapshot(), epoch)
    model.to(memory_format=torch.contiguous_format)
    model.load_state_dict(best[1])
    for p in model.parameters():
        p.requires_grad_(True)
    return Result(best[1], best[2], best[0], history, time.perf_counter() - t0, asdict(recipe))


def load_images(backbone, task: str, domains, splits=("train", "val", "test")) -> dict:
    """``{(split, domain): (model-ready images, labels)}`` (train/val on photo only, as fine-tuning uses).

    The world's images are one tensor per split (small renders); a real dataset's are an :class:`ImageStream`
    through the backbone's ``preprocess`` (decoded as they are read)."""
    from . import data

    out = {}
    for s in splits:
        for d in (domains if s == "test" else ("photo",)):
            ds = data.load(task, s, d)
            x = ImageStream(ds, backbone.preprocess) if getattr(ds, "streamed", False) else backbone.prepare(rendered(ds))
            out[s, d] = (x, torch.as_tensor(ds.labels))
    return out


def rendered(ds):
    """A world dataset's images from the disk cache (rendered once for every lesson that fine-tunes)."""
    from . import cache

    if not ds.name.startswith("world/"):
        return ds.images
    return cache.get_or_compute("images", {"images": ds.key}, lambda: torch.from_numpy(ds.images)).numpy()


def first_per_class(labels, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` images of every class (sorted): the fixed evaluation subset a figure
    that needs many points uses.  For the world's tasks it is a prefix (scene ``i`` has label ``i % C``)."""
    labels = np.asarray(labels)
    return torch.as_tensor(np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class]
                                                   for c in np.unique(labels)])))


def accuracies(logits: dict, labels: dict) -> dict:
    """``{domain: accuracy}`` + ``ood`` (mean over the shifted domains) from per-domain logits."""
    from .heads import with_ood
    return with_ood({d: float((lg.argmax(1) == labels[d]).float().mean()) for d, lg in logits.items()})


def correctness(logits: dict, labels: dict) -> dict:
    """``{domain: bool [n]}`` per-image correctness (``fm.results.correct``) from per-domain logits, plus ``ood``:
    the shifted domains' images one after another (equal sizes, so its mean is the ``ood`` accuracy)."""
    from .results import correct

    out = {d: correct(lg, labels[d]) for d, lg in logits.items()}
    shifts = [d for d in out if d != "photo"]
    return {**out, "ood": np.concatenate([out[d] for d in shifts])} if shifts else out


def mean_ci(values) -> tuple[float, float]:
    """Mean of per-seed values and the half-width of its 95 % t-interval (0 for one seed)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    half = float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), half


def logits_of(model: ImageClassifier, state_dict: dict, X: dict) -> dict:
    """``{domain: logits}`` of ``model`` with ``state_dict`` loaded, on ``X[domain]``."""
    model.load_state_dict(state_dict)
    return {d: predict(model, x) for d, x in X.items()}


def wise_curve(model: ImageClassifier, theta_0: dict, theta_1: dict, alphas, X: dict,
               progress: bool = True) -> dict:
    """``{alpha: {domain: logits}}`` of the weight-space ensembles on ``X[domain]`` (evaluated once, so
    sliders and plots index it).  ``model`` is only used as the architecture to load weights into."""
    from .weights import wise

    return {round(float(a), 4): logits_of(model, wise(theta_0, theta_1, float(a)), X)
            for a in tqdm(list(alphas), disable=not progress, desc="WiSE-FT alphas", leave=False)}


def sample_recipes(n: int, seed: int = 0, lr=(3e-4, 2e-3), epochs=(8, 16)) -> list[Recipe]:
    """A random hyper-parameter sweep for soup ingredients (model soups' "random" grid): learning rate
    (log-uniform in ``lr``), weight decay, epochs, label smoothing, augmentation, mixup and seed."""
    rng = np.random.default_rng(seed)
    return [Recipe(mode="e2e", lr=float(np.exp(rng.uniform(np.log(lr[0]), np.log(lr[1])))),
                   weight_decay=float(rng.choice([0.0, 0.01, 0.1])), epochs=int(rng.integers(epochs[0], epochs[1] + 1)),
                   label_smoothing=float(rng.choice([0.0, 0.1])), augment=float(rng.choice([0.0, 0.5])),
                   mixup=float(rng.choice([0.0, 0.0, 0.2])), seed=int(rng.integers(1000)))
            for _ in range(n)]


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
    from . import cache

    return {"backbone": backbone.id, "W": cache.key_digest({"W": W.tolist()}), "recipe": asdict(recipe),
            "train": int(len(X["train", "photo"][1])), "select": int(len(selection_split(X)[1])), **extra}


def _ingredient_job(shared, job):
    """One soup ingredient (an executor job): fine-tune a copy of ``theta_0`` and write it to the cache."""
    import os

    from . import cache

    model_0, data, cache_root = shared
    key, recipe = job
    os.environ["FMCLS_CACHE"] = cache_root  # a Ray worker writes where the driver reads
    res = finetune(copy.deepcopy(model_0), recipe, *data, progress=False)
    cache.put("ingredients", key, {"state_dict": res.state_dict, "best_epoch": res.best_epoch,
                                   "val": res.val_accuracy, "seconds": res.seconds, "history": res.history})
    return key


def train_ingredients(backbone, W, recipes, X, task: str, progress: bool = True, executor=None) -> list[Result]:
    """Fine-tune one model per recipe from the same zero-shot initialisation (a soup's ingredients, a lesson's
    fine-tunes over seeds).  Each one is cached on disk under its recipe, so a re-run (or a sweep that crashed
    half-way) only trains the missing ones, and two lessons asking for the same recipe share one run.  ``X`` as from
    :func:`load_images`; the epoch is chosen on :func:`selection_split`; ``executor`` (see
    :mod:`fmcls_lib.executors`): ``None`` trains them here one by one, ``"ray"`` / ``"ray://host:port"`` as Ray
    tasks that write their checkpoints to ``$FMCLS_CACHE``."""
    from . import cache, executors

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
    return [Result(d["state_dict"], d["best_epoch"], d["val"], d.get("history", []), d["seconds"], asdict(r))
            for d, r in zip((found[i] for i in range(len(recipes))), recipes)]


def averaged_run(backbone, W, recipe: Recipe, X, ema_decay: float = 0.99, swa_start: float = 0.5,
                 swa_lr: float | None = None, progress: bool = True) -> dict:
    """One fine-tuning run with weight averages along its own trajectory (``torch.optim.swa_utils``):
    EMA of every step (``get_ema_multi_avg_fn``) and SWA, the uniform average of the iterates at the
    end of each epoch from ``swa_start`` of training on; BatchNorm statistics of both are recomputed
    with ``update_bn``.  With ``swa_lr`` the learning rate switches to ``SWALR`` at ``swa_start`` (SWA's own
    recipe: a constant rate while averaging); without it the run keeps its cosine schedule.
    Returns ``{"last", "best_val", "ema", "swa"}`` state dicts (same architecture), cached on disk."""
    from . import cache

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


def wise_observations(accs: dict, domain: str) -> tuple[float, float, float]:
    """WiSE-FT's Observations 1 and 2 on ``accs`` (alpha -> {domain: accuracy}) for one ``domain``.

    Returns ``(worst gap, best alpha, margin)``: the smallest ``Acc(mix) - ((1 - a) Acc(theta_0) + a Acc(theta_1))``
    over the grid (Observation 1 holds iff it is >= 0), the best alpha, and how far its accuracy is above the
    better endpoint (Observation 2, strictly, iff > 0).
    """
    a0, a1 = accs[0.0][domain], accs[1.0][domain]
    worst = min(r[domain] - ((1 - a) * a0 + a * a1) for a, r in accs.items())
    best = max(accs, key=lambda a: accs[a][domain])
    return worst, best, accs[best][domain] - max(a0, a1)


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
    from . import cache

    if init not in ("zero_shot", "scratch"):
        raise ValueError(f"init={init!r}; accepted: 'zero_shot', 'scratch'")
    bad = [k for k in shared_epochs if not 0 <= int(k) <= recipe.epochs]
    if bad:
        raise ValueError(f"shared_epochs {bad} outside [0, {recipe.epochs}] (the recipe's epochs)")
    if child_init_seed is not None and (init != "scratch" or list(shared_epochs) != [0]):
        raise ValueError("child_init_seed needs init='scratch' and shared_epochs=[0] (independent runs share nothing)")

    def start(seed=recipe.seed):
        return from_zero_shot(backbone, W) if init == "zero_shot" else from_scratch(backbone, W, seed)

    from .landscape import evaluate
    from .weights import combine

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


# ------------------------------------------------------------------------------ lesson 05: WiSE-FT's evaluation

def head_logits(f: torch.Tensor, state_dict: dict) -> torch.Tensor:
    """The classifier's linear head on normalised features ``f``: ``f W^T + b`` with the head of ``state_dict``."""
    return f @ state_dict["head.weight"].T + state_dict["head.bias"]


class WiseLogits:
    """``wise_logits(mode, run, alpha, split="test", subset=False)`` -> ``{domain: logits}`` of WiSE-FT between
    ``theta_0`` and the fine-tune ``run`` (a :class:`Result`) at ``alpha``, every model evaluated at most once.

    ``images[split]`` / ``feats[split]``: ``{domain: images}`` and ``theta_0``'s encoder features on them;
    ``sub[domain]``: the indices of a fixed test subset (``subset=True``).  Alpha 0 is the zero-shot head on the
    features; LC (``mode == "lc_ft"``) shares ``theta_0``'s encoder, so its WiSE-FT is the output-space ensemble
    of the two heads (no forward pass); E2E loads the mixed weights into ``model`` (the full split, or only the
    subset's images when only the subset is asked for)."""

    def __init__(self, model: ImageClassifier, theta_0: dict, images: dict, feats: dict, sub: dict):
        self.model, self.theta_0, self.images, self.feats, self.sub = model, theta_0, images, feats, sub
        self.zero_shot = {s: {d: head_logits(f, theta_0) for d, f in fs.items()} for s, fs in feats.items()}
        self.evaluated = {}  # (mode, recipe, alpha, split[, "subset"]) -> {domain: logits}

    def __call__(self, m: str, run, al: float, split: str = "test", subset: bool = False) -> dict:
        from .weights import output_ensemble, wise

        key = (m, tuple(sorted(run.recipe.items())), al, split)
        if al == 0:
            lg = self.zero_shot[split]
        elif m == "lc_ft":  # one encoder: the output-space ensemble
            lg = {d: output_ensemble([self.zero_shot[split][d], head_logits(f, run.state_dict)], [1 - al, al])
                  for d, f in self.feats[split].items()}
        elif key in self.evaluated or not subset:
            if key not in self.evaluated:
                self.evaluated[key] = logits_of(self.model, wise(self.theta_0, run.state_dict, al), self.images[split])
            lg = self.evaluated[key]
        else:  # only the subset is needed: evaluate just those images
            if key + ("subset",) not in self.evaluated:
                self.evaluated[key + ("subset",)] = logits_of(
                    self.model, wise(self.theta_0, run.state_dict, al),
                    {d: x[self.sub[d]] for d, x in self.images[split].items()})
            return self.evaluated[key + ("subset",)]
        return {d: v[self.sub[d]] for d, v in lg.items()} if subset else lg


def margin(logits: torch.Tensor) -> torch.Tensor:
    """Per image: the largest logit minus the second largest (how confident the prediction is)."""
    top = logits.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


COMPLEMENTARITY_CASES = ("zero-shot overrides", "zero-shot is overridden")  # among disagreements: the mix follows


def complementarity(z: torch.Tensor, f1: torch.Tensor, mix: torch.Tensor, y: torch.Tensor) -> dict:
    """WiSE-FT's "zero-shot and fine-tuned models are complementary", from the logits of the zero-shot model
    ``z``, the fine-tuned model ``f1`` and their mix ``mix`` (alpha = 0.5) on the same images with labels ``y``.

    ``diversity``: the share of images where the two models disagree and one of them is right; ``disagree``: where
    they disagree at all.  Among the disagreements, the mix either follows zero-shot ("zero-shot overrides") or
    the fine-tuned model ("zero-shot is overridden"): for each, the share of disagreements and the mean margin
    (:func:`margin`) of the zero-shot and of the fine-tuned model, under keys ``(case, quantity)``."""
    pz, pf, pm = z.argmax(1), f1.argmax(1), mix.argmax(1)
    disagree = pz != pf
    out = {"diversity": float((disagree & ((pz == y) | (pf == y))).float().mean()),
           "disagree": float(disagree.float().mean())}
    for case, which in zip(COMPLEMENTARITY_CASES, (disagree & (pm == pz), disagree & (pm == pf))):
        out[case, "share of disagreements"] = float(which.sum() / disagree.sum())
        out[case, "zero-shot margin"] = float(margin(z)[which].mean())
        out[case, "fine-tuned margin"] = float(margin(f1)[which].mean())
    return out


def complementarity_table(per_seed: list):
    """The mean over seeds of :func:`complementarity`'s per-case quantities: a DataFrame with one row per case
    ("zero-shot overrides", "zero-shot is overridden") and one column per quantity."""
    import pandas as pd

    quantities = ("share of disagreements", "zero-shot margin", "fine-tuned margin")
    return pd.DataFrame({case: {q: float(np.mean([p[case, q] for p in per_seed])) for q in quantities}
                         for case in COMPLEMENTARITY_CASES}).T
