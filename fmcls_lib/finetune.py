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
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import autocast
from .errors import UnknownNameError
from .heads import logit_scale
from .training import Fit, fit, warmup_cosine

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
            raise UnknownNameError("fine-tuning mode", self.mode, MODES)
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")


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
             swa: tuple | None = None, device: str = "auto") -> Fit:
    """Fine-tune ``model`` in place (AdamW, linear warm-up then cosine, gradient clipping) with
    :func:`fmcls_lib.training.fit`.

    ``x_*`` are model-ready image tensors.  With ``keep="best"`` the model is scored on the validation split
    after each epoch and the best epoch's weights are loaded back and returned as ``Fit.state_dict``; with
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

    dev = pick_device(device)
    model.to(dev)
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    y_train, y_val = torch.as_tensor(y_train).cpu(), torch.as_tensor(y_val).cpu()
    params = _trainable(model, recipe.mode, recipe.train_fraction)
    theta_0 = [p.detach().clone() for p in params] if recipe.l2_to_init else None
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / recipe.batch_size)
    sched = warmup_cosine(opt, recipe.warmup_steps, recipe.epochs * steps_per_epoch)
    t0 = time.perf_counter()
    on_features = recipe.mode == "lc" and recipe.augment <= 0 and recipe.mixup <= 0
    if on_features:
        x_train, x_val = predict(model, x_train, features=True), predict(model, x_val, features=True)
        forward = model.head
    else:
        model.to(memory_format=torch.channels_last)  # faster convolutions on a CPU; the weights are the same
        forward = model

    def score():
        if on_features:
            out = torch.cat([model.head(x_val[i:i + 1024].to(dev)).cpu() for i in range(0, len(x_val), 1024)])
        else:
            out = predict(model, x_val)
        return float((out.argmax(1) == y_val).float().mean())

    def schedule(epoch):  # SWA: SWALR takes the learning rate over from epoch swa[0] on
        nonlocal sched
        if swa is not None and epoch == swa[0]:
            from torch.optim.swa_utils import SWALR

            sched = SWALR(opt, swa_lr=swa[1], anneal_epochs=steps_per_epoch, anneal_strategy="cos")
        return sched

    def losses(epoch):
        if branch is not None and epoch == branch[0]:
            gen.manual_seed(int(branch[1]))
        if recipe.mode == "lc":
            model.image_encoder.eval()  # frozen encoder: BatchNorm statistics stay the zero-shot ones
        if recipe.freeze_bn:
            _freeze_bn(model)
        order = torch.randperm(len(x_train), generator=gen).split(recipe.batch_size)
        streamed = isinstance(x_train, ImageStream)  # decoded batch by batch, in this epoch's order
        for idx, xb in zip(order, x_train.batches(batch_sampler=[i.tolist() for i in order]) if streamed
                           else (x_train[i] for i in order)):
            yield step_loss(xb, y_train[idx])

    def step_loss(xb, yb):
        x, y = _augment(xb, recipe.augment, gen).to(dev, non_blocking=True), yb.to(dev)
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
        return loss

    result = fit(model, opt, losses, score, recipe.epochs, scheduler=schedule, clip_grad=recipe.clip_grad,
                 keep=keep, on_step=on_step, progress=progress, desc=f"fine-tuning ({recipe.mode})", started=t0)
    model.to(memory_format=torch.contiguous_format)
    for p in model.parameters():
        p.requires_grad_(True)
    return replace(result, recipe=asdict(recipe))


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


