"""Pre-training the embedded tiny CLIPs on the procedural world with open_clip itself.

Model = an open_clip config (``models/configs/*.json``, registered by :mod:`fmcls_lib.models.clip`);
loss = ``open_clip.loss.ClipLoss``; AdamW with linear warm-up then cosine decay; image-caption pairs
from all four domains (photo-heavy, like the web).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from .. import models, world
from ..data import to_tensor
from ..models import clip as _architectures  # noqa: F401  (registers the configs and conv towers)


@dataclass(frozen=True)
class Recipe:
    model: str  # open_clip config name in models/configs
    steps: int
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 50
    corpus: int = 100_000  # distinct rendered image-caption pairs, cycled through
    seed: int = 0


RECIPES = models.dataclasses("clip", Recipe)  # tiny and tiny-vit are shipped; micro is for tests


def recipe_hash(recipe: Recipe) -> str:
    return models.recipe_hash("clip", asdict(recipe))


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _param_groups(model, weight_decay):
    # as in open_clip's training script: no decay on gains, biases, norms, embeddings, logit scale
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        excluded = p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n \
            or "embedding" in n or "token" in n
        (no_decay if excluded else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def train(recipe: Recipe, progress: bool = True, log_every: int = 100):
    """Train a CLIP from scratch; returns ``(model, history)``.  Same recipe -> same weights."""
    torch.manual_seed(recipe.seed)
    with _quiet_root_logger():  # open_clip warns that no pretrained weights were loaded: that is the point
        model = open_clip.create_model(recipe.model, output_dict=True)
    tokenizer = open_clip.get_tokenizer(recipe.model)
    mean, std = model.visual.image_mean, model.visual.image_std
    images, captions = world.pretrain_pairs(recipe.corpus)
    uniq, inverse = np.unique(captions, return_inverse=True)  # templates repeat: tokenize each once
    tokens = tokenizer(list(uniq))[torch.from_numpy(inverse)]
    loss_fn = open_clip.loss.ClipLoss()
    opt = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr,
                            betas=(0.9, 0.98), eps=1e-6)
    from ..training import warmup_cosine

    sched = warmup_cosine(opt, recipe.warmup, recipe.steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    order = torch.randperm(recipe.corpus, generator=gen)
    pos, history = 0, []
    model.train()
    bar = tqdm(range(recipe.steps), desc=f"pre-training {recipe.model}", disable=not progress)
    for step in bar:
        if pos + recipe.batch_size > recipe.corpus:
            order, pos = torch.randperm(recipe.corpus, generator=gen), 0
        idx = order[pos:pos + recipe.batch_size]
        pos += recipe.batch_size
        img = to_tensor(images[idx.numpy()], mean, std)
        out = model(img, tokens[idx])
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % log_every == 0 or step == recipe.steps - 1:
            history.append({"step": step, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, history


def build(name: str, out_dir, progress: bool = True) -> dict:
    """Train recipe ``name`` and write ``<out_dir>/clip-<name>.safetensors`` (fp16) atomically.

    Returns the manifest entry: file hash, recipe hash, build time, parameter count, headline metrics.
    """
    from safetensors.torch import save

    from ..cache import atomic_write_bytes

    recipe = RECIPES[name]
    t0 = time.time()
    model, history = train(recipe, progress=progress)
    build_s = time.time() - t0
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    data = save(sd)
    path = Path(out_dir) / f"clip-{name}.safetensors"
    atomic_write_bytes(path, data)
    return {"kind": "clip", "file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
            "recipe": asdict(recipe), "recipe_hash": recipe_hash(recipe),
            "build_seconds": round(build_s, 1),
            "params": {"visual": sum(p.numel() for p in model.visual.parameters()),
                       "total": sum(p.numel() for p in model.parameters())},
            "final_loss": history[-1]["loss"], "history": history}
