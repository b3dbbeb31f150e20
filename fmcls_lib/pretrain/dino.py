"""The embedded self-supervised encoder: DINO self-distillation (Caron et al. 2021) on world images.

No captions: a student and a teacher (EMA of the student) see different crops; the student matches the
teacher's centred, sharpened distribution over K prototypes.  Multi-crop: two global 32 px crops (teacher
and student) and local 24 px crops (student only).

Deviations from the paper, each measured on this CPU (see the closing note of the issue): the encoder is
the course's BatchNorm conv tower (timm ``fmcls_convnet_tiny``) behind a fixed per-channel Sobel stem
(:class:`SobelStem`, DeepCluster's device) instead of a ViT, because at 32 px it learns shape far faster;
the two global views are two renderings of the same object (another background, clutter and domain, like
two photographs of it, see ``train``); the teacher temperature warms up from 0.01, which kept the run out
of the uniform collapse it fell into at 0.04; and every crop gets a random hue rotation, brightness and
contrast jitter, sometimes grayscale or inverted, because colour is a shortcut an image-only objective
takes before shape.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align
from tqdm.auto import tqdm

from .. import heads, models, world
from ..data import to_tensor
from ..models.dino import MEAN, STD, encoder


@dataclass(frozen=True)
class Recipe:
    tower: str  # timm model name
    steps: int
    res: int = 32  # the encoder sees images at this resolution (global crops); local crops at 3/4 of it
    batch_size: int = 128
    local_crops: int = 4
    prototypes: int = 1024
    head_dim: int = 256
    bottleneck: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.01  # sharper at first, linearly to teacher_temp: avoids uniform collapse
    warmup_teacher_steps: int = 800
    center_momentum: float = 0.9
    teacher_momentum: float = 0.99  # cosine schedule from this to 1
    global_scale: tuple = (0.5, 1.0)
    local_scale: tuple = (0.2, 0.5)
    paired_views: bool = True  # the two global views come from two renderings of one object (see train())
    sobel: bool = True  # a fixed grayscale + Sobel stem in front of the tower (see SobelStem)
    corpus: int = 30_000  # objects (each rendered twice when paired_views)
    seed: int = 0
    # added after tiny-dino-base was built: in its hash only when set (see recipe_hash)
    init: str = ""  # continue from this recipe's teacher encoder (a new projection head), see train()
    redraw_geometry: bool = False  # the paired view re-draws size, pose and position too, see train()


ADDED = {"init": "", "redraw_geometry": False}  # fields a recipe hashes only when it sets them


RECIPES = models.dataclasses("ssl", Recipe)  # tiny-dino is shipped; micro-dino is for tests


def recipe_hash(recipe: Recipe) -> str:
    return models.recipe_hash("ssl", {k: v for k, v in asdict(recipe).items() if not (k in ADDED and v == ADDED[k])})


def _num_features(enc: nn.Module) -> int:
    return enc[-1].num_features if isinstance(enc, nn.Sequential) else enc.num_features


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised prototypes (the paper's projection head, with
    BatchNorm in the MLP: the official code's ``use_bn_in_head`` option, which keeps a small conv tower
    from collapsing to one output early on)."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, prototypes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, prototypes, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad = False

    def forward(self, x):
        return self.last(F.normalize(self.mlp(x), dim=-1))


def dino_loss(student_out: list, teacher_out: list, center: torch.Tensor, student_temp: float,
              teacher_temp: float) -> torch.Tensor:
    """Cross-entropy between the centred, sharpened teacher and the student over all view pairs that
    are not the same crop (the paper's eq. 1 and Algorithm 1)."""
    t = [F.softmax((o - center) / teacher_temp, dim=-1) for o in teacher_out]
    s = [F.log_softmax(o / student_temp, dim=-1) for o in student_out]
    terms = [-(ti * sj).sum(-1).mean() for i, ti in enumerate(t) for j, sj in enumerate(s) if i != j]
    return sum(terms) / len(terms)


# ----------------------------------------------------------------------------- augmentation

def _hue_matrices(theta: torch.Tensor) -> torch.Tensor:
    """Rotation of RGB about the grey axis by ``theta`` (per sample): a hue shift that keeps grey."""
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    K = torch.tensor([[0., -1., 1.], [1., 0., -1.], [-1., 1., 0.]]) / math.sqrt(3)
    return c * torch.eye(3) + (1 - c) / 3 * torch.ones(3, 3) + s * K


def crops(x: torch.Tensor, size: int, scale, generator: torch.Generator) -> torch.Tensor:
    """Random resized crops (area ``scale``, aspect 3/4..4/3) + flips, all in one ``roi_align``;
    then colour: random hue rotation, brightness/contrast, grayscale (p=.2), inversion (p=.2).
    ``x``: float ``[N, 3, H, W]`` in [0, 1]; returns normalised ``[N, 3, size, size]``."""
    n, _, H, W = x.shape
    u = torch.rand(n, 8, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * u[:, 1])
    w = (torch.sqrt(area * ratio) * W).clamp(max=W)
    h = (torch.sqrt(area / ratio) * H).clamp(max=H)
    x0, y0 = (W - w) * u[:, 2], (H - h) * u[:, 3]
    boxes = torch.stack([torch.arange(n, dtype=torch.float), x0, y0, x0 + w, y0 + h], 1)
    out = roi_align(x, boxes, size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    out = torch.where((u[:, 4] < 0.5)[:, None, None, None], out.flip(-1), out)
    out = torch.einsum("nij,njhw->nihw", _hue_matrices(2 * math.pi * u[:, 5]), out)
    g = torch.rand(n, 3, generator=generator)
    mean = out.mean((1, 2, 3), keepdim=True)
    out = (out - mean) * (0.6 + 0.8 * g[:, 0, None, None, None]) + mean * (0.6 + 0.8 * g[:, 1, None, None, None])
    gray = out.mean(1, keepdim=True).expand_as(out)
    out = torch.where((u[:, 6] < 0.2)[:, None, None, None], gray, out).clamp(0, 1)
    out = torch.where((u[:, 7] < 0.2)[:, None, None, None], 1 - out, out)
    return (out - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


# ----------------------------------------------------------------------------- training

_MONITOR: dict = {}


@torch.no_grad()
def knn_accuracy(model: nn.Module, res: int, task: str = "world/shapes", k: int = 10) -> float:
    """Cosine k-NN (majority vote) accuracy, photo train -> photo val: the training monitor."""
    from .. import data
    if (task, res) not in _MONITOR:
        tr, va = data.load(task, "train", "photo"), data.load(task, "val", "photo")
        _MONITOR[task, res] = (to_tensor(tr.images, MEAN, STD, res), torch.as_tensor(tr.labels),
                               to_tensor(va.images, MEAN, STD, res), torch.as_tensor(va.labels))
    xt, yt, xv, yv = _MONITOR[task, res]
    was = model.training
    model.eval()
    pred = heads.knn_predict(F.normalize(model(xt), dim=-1), yt, F.normalize(model(xv), dim=-1), k)
    model.train(was)
    return float((pred == yv).float().mean())


def train(recipe: Recipe, progress: bool = True, checkpoint: Path | None = None, log_every: int = 200,
          monitor: bool = True):
    """Train the encoder with DINO; returns ``(teacher encoder, history, seconds)``.

    The teacher is kept (as in the paper, it is the better network).  With ``checkpoint`` the run saves
    itself every 250 steps (atomically) and resumes from there.
    """
    from .. import cache
    from . import load_state, save_state

    torch.manual_seed(recipe.seed)

    def render():
        # Views of one object: the scene as the corpus has it, and (paired_views) the same object - shape,
        # colour, size, pose - rendered again with another seed in a random domain: a new background,
        # clutter and strokes, like a second photograph.  Crops of a single rendering share their
        # background texture and clutter, and DINO matches views by those before it matches shape.
        # With redraw_geometry the second rendering also draws its own size, rotation and position
        # (world.sample_scene with the object's shape and colour): geometric augmentation by re-rendering, which
        # takes away size, the shortcut the features held after the first stage (FIELD_NOTES.md).
        scenes = world.pretrain_scenes(recipe.corpus)
        a = world.render_many(scenes)
        if not recipe.paired_views:
            return torch.from_numpy(np.stack([a, a]))
        rng = np.random.default_rng(recipe.seed)
        doms, p = list(world.PRETRAIN_DOMAIN_MIX), list(world.PRETRAIN_DOMAIN_MIX.values())
        other = []
        for s in scenes:
            domain = doms[rng.choice(len(doms), p=p)]
            other.append(world.sample_scene(rng, domain=domain, shape=s.shape, color=s.color)
                         if recipe.redraw_geometry else
                         dataclasses.replace(s, seed=int(rng.integers(2**62)), domain=domain))
        return torch.from_numpy(np.stack([a, world.render_many(other)]))

    key = {"kind": "ssl-pairs", "world": world.WORLD_VERSION, "n": recipe.corpus, "paired": recipe.paired_views,
           "seed": recipe.seed, **({"redraw_geometry": True} if recipe.redraw_geometry else {})}
    images = cache.get_or_compute("corpus", key, render)
    x_all = to_tensor(images.flatten(0, 1), size=recipe.res).unflatten(0, (2, recipe.corpus))
    student = nn.ModuleDict({"encoder": encoder(recipe.tower, recipe.sobel)})
    if recipe.init:  # a curriculum stage: the previous stage's teacher encoder, a new head and a new schedule
        from safetensors.torch import load_file
        path, _, _ = models.weights("ssl", recipe.init)  # MissingModelError says how to build it
        student["encoder"].load_state_dict({k: v.float() for k, v in load_file(path).items()})
    dim = _num_features(student["encoder"])
    student["head"] = DINOHead(dim, recipe.head_dim, recipe.bottleneck, recipe.prototypes)
    teacher = nn.ModuleDict({"encoder": encoder(recipe.tower, recipe.sobel),
                             "head": DINOHead(dim, recipe.head_dim, recipe.bottleneck, recipe.prototypes)})
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=recipe.lr)
    from ..training import warmup_cosine

    sched = warmup_cosine(opt, recipe.warmup, recipe.steps)
    center = torch.zeros(recipe.prototypes)
    gen = torch.Generator().manual_seed(recipe.seed)
    objects = {"student": student, "teacher": teacher, "opt": opt, "sched": sched}
    ck = load_state(checkpoint, gen, objects)
    center, step0, history, spent = (ck["center"], ck["step"], ck["history"], ck["seconds"]) if ck \
        else (center, 0, [], 0.0)
    student.train()
    teacher.train()  # BatchNorm in the teacher uses batch statistics, as in the official code
    t0 = time.time() - spent
    bar = tqdm(range(step0, recipe.steps), desc="DINO self-distillation", disable=not progress,
               initial=step0, total=recipe.steps)
    for step in bar:
        idx = torch.randint(0, recipe.corpus, (recipe.batch_size,), generator=gen)
        xa, xb = x_all[0, idx], x_all[1, idx]
        glob = [crops(xa, recipe.res, recipe.global_scale, gen), crops(xb, recipe.res, recipe.global_scale, gen)]
        loc = [crops(xa if i % 2 else xb, recipe.res * 3 // 4, recipe.local_scale, gen)
               for i in range(recipe.local_crops)]
        with torch.no_grad():
            t_out = teacher["head"](teacher["encoder"](torch.cat(glob))).chunk(2)
        s_out = list(student["head"](student["encoder"](torch.cat(glob))).chunk(2))
        if loc:
            s_out += list(student["head"](student["encoder"](torch.cat(loc))).chunk(len(loc)))
        tt = recipe.teacher_temp + (recipe.warmup_teacher_temp - recipe.teacher_temp) * max(
            0.0, 1 - step / max(1, recipe.warmup_teacher_steps))
        loss = dino_loss(s_out, list(t_out), center, recipe.student_temp, tt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            m = 1 - (1 - recipe.teacher_momentum) * 0.5 * (1 + math.cos(math.pi * step / recipe.steps))
            for pt, ps in zip(teacher.parameters(), student.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            center.mul_(recipe.center_momentum).add_(torch.cat(t_out).mean(0), alpha=1 - recipe.center_momentum)
        if step % log_every == 0 or step == recipe.steps - 1:
            with torch.no_grad():
                p = F.softmax((torch.cat(t_out) - center) / tt, -1).mean(0)
                entropy = float(-(p * p.clamp_min(1e-12).log()).sum())
            rec = {"step": step, "loss": round(loss.item(), 4), "teacher_entropy": round(entropy, 3),
                   "seconds": round(time.time() - t0, 1)}
            if monitor:
                rec["knn_shapes_val"] = round(knn_accuracy(teacher["encoder"], recipe.res), 4)
            history.append(rec)
            bar.set_postfix({k: v for k, v in rec.items() if k in ("loss", "knn_shapes_val")})
        if checkpoint is not None and (step + 1) % 250 == 0 and step + 1 < recipe.steps:
            save_state(checkpoint, gen, objects, center=center, step=step + 1, history=history,
                       seconds=time.time() - t0)
    enc = teacher["encoder"].eval()
    return enc, history, time.time() - t0


def build(name: str, out_dir, progress: bool = True, checkpoint: Path | None = None) -> dict:
    """Train recipe ``name``; write ``<out_dir>/ssl-<name>.safetensors`` (fp16 teacher encoder)."""
    from safetensors.torch import save

    from ..cache import atomic_write_bytes

    recipe = RECIPES[name]
    enc, history, seconds = train(recipe, progress=progress, checkpoint=checkpoint)
    data = save({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in enc.state_dict().items()})
    path = Path(out_dir) / f"ssl-{name}.safetensors"
    atomic_write_bytes(path, data)
    if checkpoint is not None and checkpoint.exists():
        checkpoint.unlink()
    return {"kind": "ssl", "file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
            "recipe": asdict(recipe), "recipe_hash": recipe_hash(recipe), "build_seconds": round(seconds, 1),
            "params": sum(p.numel() for p in enc.parameters()), "final_loss": history[-1]["loss"],
            "history": history}
