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
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .. import world

TRAIN_CODE_VERSION = 1


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


SHIPPED = ("tiny",)
RECIPES = {
    "tiny": Recipe("tiny", steps=4000),
    "micro": Recipe("micro", steps=12, channels=(16, 32), batch_size=16, corpus=256, warmup=2),
}


def recipe_hash(recipe: Recipe) -> str:
    from . import clip as pretrain_clip
    blob = json.dumps({"recipe": asdict(recipe), "world": world.WORLD_VERSION, "code": TRAIN_CODE_VERSION,
                       "unet": unet_config(recipe),
                       "clip": pretrain_clip.recipe_hash(pretrain_clip.RECIPES[recipe.clip])}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def unet_config(recipe: Recipe, text_width: int | None = None, embed_dim: int | None = None) -> dict:
    """Keyword arguments of ``UNet2DConditionModel``: cross-attention only at the lowest resolution."""
    from . import clip as pretrain_clip
    if text_width is None:
        cfg = json.loads((pretrain_clip.CONFIG_DIR / f"{pretrain_clip.RECIPES[recipe.clip].model}.json")
                         .read_text())
        text_width, embed_dim = cfg["text_cfg"]["width"], cfg["embed_dim"]
    n = len(recipe.channels)
    return dict(sample_size=recipe.res, in_channels=3, out_channels=3,
                block_out_channels=list(recipe.channels), layers_per_block=1,
                down_block_types=["DownBlock2D"] * (n - 1) + ["CrossAttnDownBlock2D"],
                up_block_types=["CrossAttnUpBlock2D"] + ["UpBlock2D"] * (n - 1),
                cross_attention_dim=text_width, attention_head_dim=32,
                norm_num_groups=min(16, recipe.channels[0]),
                class_embed_type="projection", projection_class_embeddings_input_dim=embed_dim)


def noise_scheduler():
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=True)


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


def to_unit(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def from_unit(x: torch.Tensor, out_res: int = world.RES) -> np.ndarray:
    if x.shape[-1] != out_res:
        x = F.interpolate(x, size=out_res, mode="bicubic", align_corners=False)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def text_conditioning(clip_model, tokens: torch.Tensor):
    """Per-token states ``[B, L, width]`` (after ``ln_final``) and the pooled, normalised embedding."""
    m = clip_model
    cast = m.transformer.get_cast_dtype()
    x = m.token_embedding(tokens).to(cast) + m.positional_embedding.to(cast)
    x = m.transformer(x, attn_mask=m.attn_mask)
    states = m.ln_final(x)
    pooled = F.normalize(m.encode_text(tokens), dim=-1)
    return states.float(), pooled.float()


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
    clip = backbones.load_clip(recipe.clip, device="cpu", progress=progress)
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


# ----------------------------------------------------------------------------- sampling

@dataclass
class ImageOutput:
    images: np.ndarray  # uint8 [N, H, W, 3], like diffusers' output_type="np" but in the world's dtype


class TinyText2ImagePipeline:
    """Text-to-image and image-to-image with the call shape of diffusers' pipelines.

    ``pipe(prompt, num_images_per_prompt=8, guidance_scale=4.0, num_inference_steps=25, generator=g)``;
    ``pipe.img2img(prompt, image, strength=0.5, ...)`` noises ``image`` to step ``strength·T`` and
    denoises from there (the synthetic-data paper's Real Guidance); ``strength=0`` returns the image.
    """

    def __init__(self, unet, clip, scheduler=None, out_res: int = world.RES, batch_size: int = 256):
        from diffusers import DDIMScheduler
        self.unet, self.clip, self.out_res, self.batch_size = unet.eval(), clip, out_res, batch_size
        self.scheduler = scheduler or DDIMScheduler.from_config(noise_scheduler().config)
        self.res = unet.config.sample_size

    @property
    def device(self):
        return next(self.unet.parameters()).device

    def _encode(self, prompts):
        return [t.to(self.device) for t in text_conditioning(self.clip.model, self.clip.tokenizer(
            list(prompts)).to(self.clip.device))]

    @torch.no_grad()
    def _denoise(self, x, prompts, guidance_scale, timesteps):
        states, pooled = self._encode(prompts)
        ustates, upooled = self._encode([""])
        n = len(prompts)
        for t in timesteps:
            eps = self.unet(torch.cat([x, x]), t, torch.cat([ustates.expand(n, -1, -1), states]),
                            class_labels=torch.cat([upooled.expand(n, -1), pooled])).sample
            e_u, e_c = eps.chunk(2)
            x = self.scheduler.step(e_u + guidance_scale * (e_c - e_u), t, x).prev_sample
        return x

    def _prompts(self, prompt, k):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or k < 1:
            raise ValueError(f"need at least one prompt and num_images_per_prompt >= 1, got "
                             f"{len(prompts)} prompts and {k}")
        return [p for p in prompts for _ in range(k)]

    def __call__(self, prompt, num_images_per_prompt: int = 1, guidance_scale: float = 4.0,
                 num_inference_steps: int = 25, generator: torch.Generator | None = None,
                 progress: bool = False) -> ImageOutput:
        prompts = self._prompts(prompt, num_images_per_prompt)
        self.scheduler.set_timesteps(num_inference_steps)
        out = []
        for i in tqdm(range(0, len(prompts), self.batch_size), desc="generating", disable=not progress):
            p = prompts[i:i + self.batch_size]
            x = torch.randn((len(p), 3, self.res, self.res), generator=generator).to(self.device)
            out.append(from_unit(self._denoise(x, p, guidance_scale, self.scheduler.timesteps).cpu(),
                                 self.out_res))
        return ImageOutput(np.concatenate(out))

    def img2img(self, prompt, image: np.ndarray, strength: float = 0.5, num_images_per_prompt: int = 1,
                guidance_scale: float = 4.0, num_inference_steps: int = 25,
                generator: torch.Generator | None = None) -> ImageOutput:
        """``image``: uint8 ``[N, H, W, 3]``, one per prompt (repeated ``num_images_per_prompt`` times)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        prompts = self._prompts(prompt, num_images_per_prompt)
        image = np.asarray(image)
        if image.ndim != 4 or len(image) * num_images_per_prompt != len(prompts):
            raise ValueError(f"image must be uint8 [N, H, W, 3] with one image per prompt; got shape "
                             f"{image.shape} for {len(prompts) // num_images_per_prompt} prompts")
        self.scheduler.set_timesteps(num_inference_steps)
        k = int(round(num_inference_steps * strength))
        if k == 0:
            return ImageOutput(np.repeat(image, num_images_per_prompt, 0))
        timesteps = self.scheduler.timesteps[num_inference_steps - k:]
        x0 = F.interpolate(to_unit(np.repeat(image, num_images_per_prompt, 0)), size=self.res,
                           mode="area")
        out = []
        for i in range(0, len(prompts), self.batch_size):
            x = x0[i:i + self.batch_size]
            eps = torch.randn(x.shape, generator=generator)
            x = self.scheduler.add_noise(x, eps, timesteps[:1].repeat(len(x))).to(self.device)
            out.append(from_unit(self._denoise(x, prompts[i:i + self.batch_size], guidance_scale,
                                               timesteps).cpu(), self.out_res))
        return ImageOutput(np.concatenate(out))
