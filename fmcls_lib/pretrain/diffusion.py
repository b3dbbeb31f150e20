"""The embedded text-to-image model: a diffusers ``UNet2DConditionModel`` trained on the world.

Built the way Stable Diffusion is built, at toy scale: a frozen CLIP text encoder (the course's tiny
CLIP) gives per-token states for cross-attention, the UNet predicts the noise ε (DDPM loss, Ho et al.
2020), captions are dropped 10 % of the time so classifier-free guidance works at sampling time, and a
diffusers scheduler (DDIM) samples.  Two deviations, both for CPU budget (FIELD_NOTES.md): the UNet
works at 16 px on clean renders (plain background, no clutter) so its few thousand affordable steps go
into geometry, and the pooled CLIP text embedding is also added to the timestep embedding (as Imagen
and unCLIP do) so the class reaches every resolution.  Images are upsampled to the world's 32 px.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .. import models, world
from ..models.diffusion import noise_scheduler, text_conditioning, to_unit, unet_config


@dataclass(frozen=True)
class Recipe:
    clip: str  # the embedded CLIP whose text tower conditions the UNet
    steps: int
    res: int = 16
    channels: tuple = (48, 96)
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    corpus: int = 60_000
    seed: int = 0


RECIPES = models.dataclasses("generator", Recipe)


def recipe_hash(recipe: Recipe) -> str:
    return models.recipe_hash("generator", asdict(recipe))


# ----------------------------------------------------------------------------- data

def render_clean(scene: world.Scene, res: int) -> np.ndarray:
    """The scene's object on a plain background (no clutter, exact colour) at ``res`` px."""
    S = res * 4
    rng = np.random.default_rng(scene.seed % 2**32)
    bg = tuple(int(v) for v in rng.uniform(70, 170, 3))
    img = Image.new("RGB", (S, S), bg)
    img.paste(world.COLORS[scene.color], (0, 0), world._mask(scene, S))
    return np.asarray(img.resize((res, res), Image.BOX), dtype=np.uint8)


def training_pairs(n: int, res: int):
    """Clean renders of the pre-training scene stream and their (photo-worded) captions."""
    scenes = [s.__class__(**{**s.__dict__, "domain": "photo"}) for s in world.pretrain_scenes(n)]
    return np.stack([render_clean(s, res) for s in scenes]), [world.caption(s) for s in scenes]


# ----------------------------------------------------------------------------- training

@dataclass
class _State:
    step: int = 0
    history: list = field(default_factory=list)
    seconds: float = 0.0


def train(recipe: Recipe, progress: bool = True, checkpoint: Path | None = None, log_every: int = 100):
    """Train the UNet; returns ``(unet with EMA weights, history, seconds)``.

    With ``checkpoint`` the run saves itself every 250 steps (atomically) and resumes from there.
    """
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    from .. import backbones
    from . import load_state, save_state

    torch.manual_seed(recipe.seed)
    clip = backbones.load_clip(recipe.clip, device="cpu")
    images, captions = training_pairs(recipe.corpus, recipe.res)
    uniq, inverse = np.unique(captions + [""], return_inverse=True)
    states, pooled = text_conditioning(clip.model, clip.tokenizer(list(uniq)))
    inverse, empty = torch.from_numpy(inverse[:-1]), int(inverse[-1])
    x_all = to_unit(images)

    unet = UNet2DConditionModel(**unet_config(recipe, states.shape[-1], pooled.shape[-1]))
    ema = EMAModel(unet.parameters(), decay=recipe.ema_decay, use_ema_warmup=True, power=2 / 3)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, weight_decay=1e-2)
    from ..training import warmup_cosine

    sched = warmup_cosine(opt, recipe.warmup, recipe.steps, floor=0.1)  # cosine to a tenth of the rate
    noise = noise_scheduler()
    gen = torch.Generator().manual_seed(recipe.seed)
    objects = {"unet": unet, "ema": ema, "opt": opt, "sched": sched}
    ck = load_state(checkpoint, gen, objects)
    st = _State(ck["step"], ck["history"], ck["seconds"]) if ck else _State()
    unet.train()
    bar = tqdm(range(st.step, recipe.steps), desc="training the text-to-image UNet", disable=not progress,
               initial=st.step, total=recipe.steps)
    t0 = time.time() - st.seconds
    for step in bar:
        idx = torch.randint(0, recipe.corpus, (recipe.batch_size,), generator=gen)
        cap = inverse[idx].clone()
        cap[torch.rand(recipe.batch_size, generator=gen) < recipe.caption_dropout] = empty
        x0 = x_all[idx]
        eps = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise.config.num_train_timesteps, (recipe.batch_size,), generator=gen)
        pred = unet(noise.add_noise(x0, eps, t), t, states[cap], class_labels=pooled[cap]).sample
        loss = F.mse_loss(pred, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.step(unet.parameters())
        if step % log_every == 0 or step == recipe.steps - 1:
            st.history.append({"step": step, "loss": round(loss.item(), 5), "seconds": round(time.time() - t0, 1)})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if checkpoint is not None and (step + 1) % 250 == 0 and step + 1 < recipe.steps:
            save_state(checkpoint, gen, objects, step=step + 1, history=st.history, seconds=time.time() - t0)
    ema.copy_to(unet.parameters())
    unet.eval()
    return unet, st.history, time.time() - t0


def build(name: str, out_dir, progress: bool = True, checkpoint: Path | None = None) -> dict:
    """Train recipe ``name``; write ``<out_dir>/generator-<name>.safetensors`` (fp16) atomically."""
    from safetensors.torch import save

    from ..cache import atomic_write_bytes

    recipe = RECIPES[name]
    unet, history, seconds = train(recipe, progress=progress, checkpoint=checkpoint)
    sd = {k: v.half().contiguous() for k, v in unet.state_dict().items()}
    data = save(sd)
    path = Path(out_dir) / f"generator-{name}.safetensors"
    atomic_write_bytes(path, data)
    if checkpoint is not None and checkpoint.exists():
        checkpoint.unlink()
    return {"kind": "generator", "file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
            "recipe": asdict(recipe), "recipe_hash": recipe_hash(recipe),
            "unet_kwargs": unet_config(recipe, unet.config.cross_attention_dim,
                                       unet.config.projection_class_embeddings_input_dim),
            "build_seconds": round(seconds, 1), "params": sum(p.numel() for p in unet.parameters()),
            "final_loss": history[-1]["loss"], "history": history}


