"""The embedded text-to-image model's architecture and sampler: the diffusers ``UNet2DConditionModel`` config of
a recipe, its noise schedule, the tiny CLIP's text conditioning, and the pipeline that samples with DDIM (the
weights come from :mod:`fmcls_lib.pretrain.diffusion`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import world
from ..data import to_tensor


def unet_config(recipe, text_width: int, embed_dim: int) -> dict:
    """Keyword arguments of ``UNet2DConditionModel`` for ``recipe`` (a registry dict or the builder's ``Recipe``):
    cross-attention only at the lowest resolution; ``text_width`` and ``embed_dim`` those of the recipe's CLIP."""
    recipe = asdict(recipe) if is_dataclass(recipe) else recipe
    n = len(recipe["channels"])
    return dict(sample_size=recipe["res"], in_channels=3, out_channels=3,
                block_out_channels=list(recipe["channels"]), layers_per_block=1,
                down_block_types=["DownBlock2D"] * (n - 1) + ["CrossAttnDownBlock2D"],
                up_block_types=["CrossAttnUpBlock2D"] + ["UpBlock2D"] * (n - 1),
                cross_attention_dim=text_width, attention_head_dim=32,
                norm_num_groups=min(16, recipe["channels"][0]),
                class_embed_type="projection", projection_class_embeddings_input_dim=embed_dim)


def noise_scheduler():
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=True)


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> ``[N, 3, H, W]`` in [-1, 1], the UNet's pixel range."""
    return to_tensor(images, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


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
