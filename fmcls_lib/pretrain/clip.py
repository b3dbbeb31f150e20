"""Pre-training the embedded tiny CLIPs on the procedural world with open_clip itself.

Model = an open_clip config (``configs/*.json``, registered with ``open_clip.add_model_config``);
loss = ``open_clip.loss.ClipLoss``; AdamW with linear warm-up then cosine decay; image-caption pairs
from all four domains (photo-heavy, like the web).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from .. import world
from . import convnet  # noqa: F401  (registers the conv towers with timm)

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)
TRAIN_CODE_VERSION = 1  # bump when the training loop changes what a recipe produces


@dataclass(frozen=True)
class Recipe:
    model: str  # open_clip config name in CONFIG_DIR
    steps: int
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 50
    corpus: int = 100_000  # distinct rendered image-caption pairs, cycled through
    seed: int = 0


SHIPPED = ("tiny", "tiny-vit")  # built by `fmcls build` and committed; micro is for tests
RECIPES = {
    "tiny": Recipe("fmcls-tiny-conv", steps=1300),
    "tiny-vit": Recipe("fmcls-tiny-vit", steps=800, lr=1e-3),
    "micro": Recipe("fmcls-micro", steps=30, batch_size=64, corpus=1500, warmup=5),
}


def recipe_hash(recipe: Recipe) -> str:
    """Changes whenever the recipe, the model config, the world or the training loop changes."""
    blob = json.dumps({"recipe": asdict(recipe), "world": world.WORLD_VERSION,
                       "code": TRAIN_CODE_VERSION,
                       "config": json.loads((CONFIG_DIR / f"{recipe.model}.json").read_text())},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def images_to_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, 3, H, W]`` (open_clip's Normalize)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


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
        img = images_to_tensor(images[idx.numpy()], mean, std)
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


def headline_metrics(backbone, task: str = "world/shapes") -> dict:
    """Validation numbers a build is judged by: zero-shot per domain, full photo probe, never-named."""
    from .. import features, heads, prompts

    S = features.load_splits(backbone, task, world.DOMAINS, splits=("train", "val"), progress=False)
    classes = world.TASKS[task].classnames
    W = heads.zero_shot_head(backbone, classes, prompts.PHOTO)
    zs = {d: heads.accuracy(heads.logits(S["val", d][0], W), S["val", d][1]) for d in world.DOMAINS}
    probe = heads.linear_probe(*S["train", "photo"], *S["val", "photo"])
    f, y = S["val", "photo"]
    pred = heads.logits(f, W).argmax(1)
    never = [classes.index(c) for c in world.NEVER_NAMED if c in classes]
    return {"task": task, "split": "val", "zero_shot": zs,
            "linear_probe_photo": heads.accuracy(probe.logits(f), y),
            "zero_shot_never_named_classes": float((pred[torch.isin(y, torch.tensor(never))] ==
                                                    y[torch.isin(y, torch.tensor(never))]).float().mean())
            if never else None}
