"""Random-weight stand-ins of the real path's models, written where their real loaders look.

Every file goes into a Hugging Face hub cache (``<hub>/models--<org>--<name>/snapshots/<rev>/…`` with
``refs/main``), the layout ``huggingface_hub.hf_hub_download`` reads offline, so open_clip, timm and diffusers
load them through exactly the code a student's cached downloads go through.  Nothing here is meaningful as a
model: the weights are random; only the architectures, file formats and loaders are real.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

REVISION = "0" * 40  # the snapshot folder name (a commit hash in a real cache)

# a small ViT CLIP at the real input size, through open_clip's hf-hub loader (a fast stand-in for the lessons)
TINY_VIT_CLIP = "fmcls-standins/clip-vit-tiny-224"
TINY_VIT_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 64, "layers": 2, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def snapshot(hub: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in hub cache ``hub`` (``refs/main`` pointing at it)."""
    org, name = repo_id.split("/")
    repo = Path(hub) / f"models--{org}--{name}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return repo / "snapshots" / REVISION


def _publish(hub: Path, repo_id: str, write) -> Path:
    """Write a repo's files with ``write(folder)`` into a temporary folder, then move it into place: a crash never
    leaves a half-written snapshot that a loader would take for a complete one."""
    final = snapshot(hub, repo_id)
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(dir=final.parent.parent, prefix=".tmp-"))
    try:
        write(tmp)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _save(state_dict: dict, path: Path, dtype=None) -> None:
    from safetensors.torch import save_file
    save_file({k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
               for k, v in state_dict.items()}, str(path))


def write_tiny_vit_clip(hub: Path, seed: int = 0) -> Path:
    """``hf-hub:fmcls-standins/clip-vit-tiny-224``: an open_clip ViT (patch 32 at 224 px, 2 layers) with random
    weights, config in ``open_clip_config.json`` as open_clip's hub models ship it."""
    import open_clip

    def write(folder):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**TINY_VIT_CFG)
        cfg = {"model_cfg": TINY_VIT_CFG,
               "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                                  "resize_mode": "shortest"}}
        (folder / "open_clip_config.json").write_text(json.dumps(cfg, indent=1))
        _save(model.state_dict(), folder / "open_clip_model.safetensors")
    return _publish(hub, TINY_VIT_CLIP, write)


def write_vit_b_32_openai(hub: Path, seed: int = 0) -> Path:
    """``ViT-B-32/openai``'s hub file (``timm/vit_base_patch32_clip_224.openai``) with random weights of the exact
    architecture (QuickGELU, as the tag's config says), stored in fp16 to halve the file."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    repo = cfg["hf_hub"].strip("/")

    def write(folder):
        torch.manual_seed(seed)
        model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
        _save(model.state_dict(), folder / "open_clip_model.safetensors", torch.float16)
    return _publish(hub, repo, write)


def write_timm_dino(hub: Path, name: str = "vit_small_patch16_224.dino", seed: int = 0) -> Path:
    """A timm DINO model's hub file (``timm/<name>/model.safetensors``), random weights of that architecture."""
    import timm

    repo = timm.models.get_pretrained_cfg(name).hf_hub_id

    def write(folder):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False, num_classes=0)
        _save(model.state_dict(), folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"architecture": name.split(".")[0], "num_classes": 0}))
    return _publish(hub, repo, write)


def clip_tokenizer_files(folder: Path) -> None:
    """``vocab.json`` + ``merges.txt`` of CLIP's BPE (the tokenizer every Stable Diffusion 1.x/2.x ships), built from
    open_clip's bundled vocabulary the way open_clip's ``SimpleTokenizer`` builds it: no download needed."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def write_sd_turbo(hub: Path, repo_id: str = "stabilityai/sd-turbo", seed: int = 0) -> Path:
    """A tiny random Stable-Diffusion pipeline saved by ``save_pretrained`` under ``repo_id``: the real classes
    (UNet2DConditionModel, AutoencoderKL, transformers' CLIPTextModel + CLIPTokenizer, sd-turbo's
    EulerDiscreteScheduler with trailing timesteps), 64-px output."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    def write(folder):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                                    block_out_channels=(32, 64), cross_attention_dim=32, attention_head_dim=4,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            norm_num_groups=8, sample_size=64)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                            num_hidden_layers=2, vocab_size=49408, max_position_embeddings=77,
                                            projection_dim=32))
        tok_dir = folder / ".tok"
        clip_tokenizer_files(tok_dir)
        tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
        sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, timestep_spacing="trailing", steps_offset=1,
                                       prediction_type="epsilon")
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(str(folder), safe_serialization=True)
        shutil.rmtree(tok_dir)
    return _publish(hub, repo_id, write)
