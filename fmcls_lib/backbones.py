"""Foundation models by name: the embedded tiny CLIPs and any open_clip pretrained pair.

``load_clip("tiny")`` loads the CLIP shipped with the course (``fmcls_lib/pretrain/weights``, hash-checked,
rebuilt into the cache if missing or corrupt); ``load_clip("ViT-B-32/openai")`` loads a real CLIP through
open_clip (network or a warm cache needed); ``load_clip("ViT-B-32", checkpoint="file.pt")`` loads a
local checkpoint file.  All come back as a :class:`CLIPBackbone` with the same methods.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch

from . import cache
from .errors import CorruptFileError, OfflineModelError, UnknownNameError
from .pretrain import clip as pretrain_clip

SHIPPED_DIR = Path(__file__).parent / "pretrain" / "weights"
MANIFEST = SHIPPED_DIR / "manifest.json"
EMBEDDED_CLIPS = {name: r.model for name, r in pretrain_clip.RECIPES.items()}


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class CLIPBackbone:
    name: str
    model: Any
    tokenizer: Any
    preprocess: Any  # open_clip's eval transform, for PIL images of real datasets
    weights_hash: str
    device: torch.device

    @property
    def id(self) -> str:
        return f"{self.name}@{self.weights_hash[:16]}"

    @property
    def image_size(self) -> int:
        s = self.model.visual.image_size
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    @property
    def transform_id(self) -> str:
        v = self.model.visual
        return f"resize{self.image_size}-mean{tuple(np.round(v.image_mean, 4))}-std{tuple(np.round(v.image_std, 4))}"

    def prepare(self, images) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` arrays (resized bicubically if needed) or PIL images -> model input."""
        if isinstance(images, np.ndarray):
            v = self.model.visual
            x = pretrain_clip.images_to_tensor(images, v.image_mean, v.image_std)
            if x.shape[-1] != self.image_size:
                x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bicubic",
                                                    align_corners=False)
            return x
        return torch.stack([self.preprocess(im) for im in images])

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        f = self.model.encode_image(self.prepare(images).to(self.device))
        return torch.nn.functional.normalize(f.float(), dim=-1).cpu()

    @torch.no_grad()
    def encode_text(self, texts) -> torch.Tensor:
        f = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
        return torch.nn.functional.normalize(f.float(), dim=-1).cpu()


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def _kind_module(kind: str):
    """The pre-training module of an embedded-model family (``clip``, ``generator``, ``ssl``)."""
    import importlib
    mod = {"clip": "clip", "generator": "diffusion", "ssl": "dino"}[kind]
    return importlib.import_module(f".pretrain.{mod}", __package__)


def shipped_keys() -> list[str]:
    """Manifest keys of every model the course ships, e.g. ``clip-tiny``, ``generator-tiny``."""
    return [f"{k}-{n}" for k in ("clip", "generator", "ssl") for n in _kind_module(k).SHIPPED]


def _embedded_weights(name: str, progress: bool = True, kind: str = "clip") -> tuple[Path, str, dict]:
    """Path, sha256 and manifest entry of embedded model ``<kind>-<name>``: the shipped file, else a
    cached build (trained now if missing)."""
    mod = _kind_module(kind)
    want_recipe = mod.recipe_hash(mod.RECIPES[name])
    entry = _manifest().get(f"{kind}-{name}")
    if entry is not None:
        path = SHIPPED_DIR / entry["file"]
        if path.exists() and cache.file_sha256(path) == entry["sha256"]:
            if entry["recipe_hash"] != want_recipe:
                warnings.warn(f"the shipped {kind}-{name} was built from an older recipe "
                              f"({entry['recipe_hash']} != {want_recipe}); run `fmcls build` to rebuild "
                              "and re-commit it", stacklevel=3)
            return path, entry["sha256"], entry
        warnings.warn(f"shipped weights {path} are missing or corrupt; rebuilding into the cache",
                      stacklevel=3)
    out = cache.cache_dir() / "models"
    meta_path = out / f"{kind}-{name}-{want_recipe}.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        path = out / meta["file"]
        if path.exists() and cache.file_sha256(path) == meta["sha256"]:
            return path, meta["sha256"], meta
    meta = mod.build(name, out, progress=progress)
    final = out / f"{kind}-{name}-{want_recipe}.safetensors"
    os.replace(out / meta["file"], final)
    meta["file"] = final.name
    cache.atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    return final, meta["sha256"], meta


def _network_reachable(host: str = "huggingface.co", timeout: float = 1.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _real_weights(arch: str, tag: str) -> str:
    pairs = open_clip.list_pretrained()
    if (arch, tag) not in pairs:
        raise UnknownNameError("open_clip pretrained pair", f"{arch}/{tag}",
                               ["tiny", "tiny-vit", "micro"] + [f"{a}/{t}" for a, t in pairs])
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub_cache = os.environ.get("HF_HUB_CACHE") or str(Path.home() / ".cache" / "huggingface" / "hub")
    online = _network_reachable()
    if not online:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # look in the local cache only, fail fast
    err = None
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception as e:  # huggingface_hub / urllib raise many types for "not here"
        path, err = "", e
    if not path:
        raise OfflineModelError(
            f"CLIP weights {arch}/{tag} are not in the local cache ({hub_cache}) and the network is "
            f"{'reachable but the download failed: ' + repr(err) if online else 'off'}. On a machine "
            f"with network run once:  python -c \"import open_clip; open_clip.create_model('{arch}', "
            f"pretrained='{tag}')\"  or pass a local file: load_clip('{arch}', checkpoint='model.pt').")
    return path


def load_clip(name: str = "tiny", device: str = "auto", checkpoint: str | None = None,
              progress: bool = True) -> CLIPBackbone:
    """Load a CLIP by name.

    ``name``: ``"tiny"`` (the course's conv-tower CLIP), ``"tiny-vit"``, ``"micro"`` (for tests), any
    ``"<arch>/<tag>"`` from ``open_clip.list_pretrained()``, or an ``<arch>`` with ``checkpoint=`` a
    local weights file.
    """
    dev = pick_device(device)
    if name in EMBEDDED_CLIPS:
        path, sha, _ = _embedded_weights(name, progress=progress)
        arch, pretrained = EMBEDDED_CLIPS[name], str(path)
    elif checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint file {checkpoint!r} does not exist")
        if name not in open_clip.list_models():
            raise UnknownNameError("open_clip architecture", name, open_clip.list_models())
        arch, pretrained, sha = name, checkpoint, cache.file_sha256(checkpoint)
    elif "/" in name:
        arch, tag = name.split("/", 1)
        pretrained = _real_weights(arch, tag)
        sha = cache.file_sha256(pretrained)
    else:
        raise UnknownNameError("backbone", name, list(EMBEDDED_CLIPS) + ["<arch>/<tag>, e.g. ViT-B-32/openai"])
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained,
                                                                     device=dev)
    except RuntimeError as e:
        if "state_dict" in str(e) or "size mismatch" in str(e):
            raise CorruptFileError(f"{pretrained} does not hold weights for {arch}: {e}") from e
        raise
    model.eval()
    return CLIPBackbone(name if checkpoint is None else f"{name}:{Path(checkpoint).name}", model,
                        open_clip.get_tokenizer(arch), preprocess, sha, dev)


# ----------------------------------------------------------------------------- self-supervised encoders

@dataclass
class SSLBackbone:
    """An image-only encoder (DINO-style): ``encode_images`` like a CLIP, no text tower."""
    name: str
    model: Any
    mean: tuple
    std: tuple
    image_size: int
    weights_hash: str
    device: torch.device
    preprocess: Any = None  # for PIL images (real datasets)
    info: dict = field(default_factory=dict)  # embedded models: their manifest entry (build record, headline)

    @property
    def id(self) -> str:
        return f"ssl:{self.name}@{self.weights_hash[:16]}"

    @property
    def transform_id(self) -> str:
        return f"resize{self.image_size}-mean{tuple(np.round(self.mean, 4))}-std{tuple(np.round(self.std, 4))}"

    def prepare(self, images) -> torch.Tensor:
        if isinstance(images, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
            if x.shape[-1] != self.image_size:
                x = torch.nn.functional.interpolate(x, size=self.image_size, mode="area")  # as in training
            return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)
        return torch.stack([self.preprocess(im) for im in images])

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        f = self.model(self.prepare(images).to(self.device))
        return torch.nn.functional.normalize(f.float(), dim=-1).cpu()


def _timm_offline(name: str, checkpoint: str | None):
    import timm
    arch = name.split(".")[0]
    if arch not in timm.list_models():
        raise UnknownNameError("timm architecture", name, ["tiny-dino", "micro-dino"] +
                               timm.list_pretrained("*dino*"))
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint file {checkpoint!r} does not exist")
        return timm.create_model(name, pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay={"file": checkpoint}), cache.file_sha256(checkpoint)
    if not _network_reachable():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:  # huggingface_hub raises many types for "not here"
        raise OfflineModelError(
            f"weights of {name} are not in the local Hugging Face cache and could not be downloaded "
            f"({type(e).__name__}). On a machine with network run once:  python -c \"import timm; "
            f"timm.create_model('{name}', pretrained=True)\"  or pass a local file: "
            f"load_ssl('{arch}', checkpoint='model.safetensors').") from e
    return model, str(model.pretrained_cfg.get("hf_hub_id") or name)


def load_ssl(name: str = "tiny-dino", device: str = "auto", checkpoint: str | None = None,
             progress: bool = True) -> SSLBackbone:
    """Load a self-supervised image encoder: ``"tiny-dino"`` (shipped), ``"micro-dino"`` (tests), or a
    timm DINO model such as ``"vit_small_patch14_dinov2.lvd142m"`` / ``"vit_small_patch16_224.dino"``
    (network or local cache; ``checkpoint=`` a local weights file)."""
    from safetensors.torch import load_file

    from .pretrain import dino

    dev = pick_device(device)
    if name in dino.RECIPES:
        path, sha, entry = _embedded_weights(name, progress=progress, kind="ssl")
        model = dino.encoder(dino.RECIPES[name])
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in load_file(path).items()})
        return SSLBackbone(name, model.eval().to(dev), dino.MEAN, dino.STD, dino.RECIPES[name].res, sha, dev,
                           info=entry)
    import timm
    model, sha = _timm_offline(name, checkpoint)
    cfg = timm.data.resolve_data_config({}, model=model)
    return SSLBackbone(name, model.eval().to(dev), tuple(cfg["mean"]), tuple(cfg["std"]), cfg["input_size"][-1],
                       hashlib.sha256(str(sha).encode()).hexdigest(), dev,
                       timm.data.create_transform(**cfg))


# ----------------------------------------------------------------------------- generators

class _DiffusersPipeline:
    """A real diffusers text-to-image pipeline behind the embedded pipeline's call shape (uint8 arrays)."""

    def __init__(self, pipe, name):
        self.pipe, self.name, self._i2i = pipe, name, None

    @staticmethod
    def _np(out):
        return np.stack([np.asarray(im.convert("RGB")) for im in out.images])

    def __call__(self, prompt, num_images_per_prompt=1, guidance_scale=4.0, num_inference_steps=25,
                 generator=None, **kw):
        return type("ImageOutput", (), {"images": self._np(self.pipe(
            prompt, num_images_per_prompt=num_images_per_prompt, guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps, generator=generator, **kw))})

    def img2img(self, prompt, image, strength=0.5, num_images_per_prompt=1, guidance_scale=4.0,
                num_inference_steps=25, generator=None):
        from diffusers import AutoPipelineForImage2Image
        from PIL import Image
        if self._i2i is None:
            self._i2i = AutoPipelineForImage2Image.from_pipe(self.pipe)
        return type("ImageOutput", (), {"images": self._np(self._i2i(
            prompt, image=[Image.fromarray(im) for im in np.asarray(image)], strength=strength,
            num_images_per_prompt=num_images_per_prompt, guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps, generator=generator))})


def load_generator(name: str = "tiny", device: str = "auto", progress: bool = True):
    """A text-to-image pipeline: ``"tiny"`` (shipped, conditioned on the tiny CLIP's text tower),
    ``"micro"`` (tests), or a diffusers model id / local folder such as ``"stabilityai/sd-turbo"``."""
    from .pretrain import diffusion

    dev = pick_device(device)
    if name in diffusion.RECIPES:
        from diffusers import UNet2DConditionModel
        from safetensors.torch import load_file
        recipe = diffusion.RECIPES[name]
        clip = load_clip(recipe.clip, device=str(dev), progress=progress)
        path, _, entry = _embedded_weights(name, progress=progress, kind="generator")
        unet = UNet2DConditionModel(**entry["unet_kwargs"])
        unet.load_state_dict({k: v.float() for k, v in load_file(path).items()})
        pipe = diffusion.TinyText2ImagePipeline(unet.to(dev), clip)
        pipe.id, pipe.info = f"generator-{name}@{entry['sha256'][:16]}", entry
        return pipe
    if "/" not in name and not os.path.isdir(name):
        raise UnknownNameError("generator", name, list(diffusion.RECIPES) +
                               ["<diffusers model id>, e.g. stabilityai/sd-turbo", "<local folder>"])
    from diffusers import AutoPipelineForText2Image
    local = os.path.isdir(name) or not _network_reachable()
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(
            name, torch_dtype=torch.float16 if dev.type == "cuda" else torch.float32, local_files_only=local)
    except Exception as e:  # huggingface_hub raises many types for "not here"
        raise OfflineModelError(
            f"diffusers pipeline {name!r} is not in the local Hugging Face cache and the network is off "
            f"({type(e).__name__}). On a machine with network run once:  python -c \"from diffusers import "
            f"AutoPipelineForText2Image as P; P.from_pretrained('{name}')\"  or pass a local folder.") from e
    out = _DiffusersPipeline(pipe.to(dev), name)
    out.id, out.info = name, {"model": name}
    return out
