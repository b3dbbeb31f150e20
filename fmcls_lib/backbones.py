"""Foundation models by name: the embedded tiny CLIPs and any open_clip pretrained pair.

``load_clip("tiny")`` loads the CLIP shipped with the course (``fmcls_lib/pretrain/weights``, hash-checked,
rebuilt into the cache if missing or corrupt); ``load_clip("ViT-B-32/openai")`` loads a real CLIP through
open_clip (network or a warm cache needed); ``load_clip("ViT-B-32", checkpoint="file.pt")`` loads a
local checkpoint file.  All come back as a :class:`CLIPBackbone` with the same methods.
"""
from __future__ import annotations

import json
import os
import socket
import warnings
from dataclasses import dataclass
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


def _embedded_weights(name: str, progress: bool = True) -> tuple[Path, str]:
    """Path and sha256 of the embedded CLIP ``name``: the shipped file, else a cached build."""
    recipe = pretrain_clip.RECIPES[name]
    want_recipe = pretrain_clip.recipe_hash(recipe)
    entry = _manifest().get(f"clip-{name}")
    if entry is not None:
        path = SHIPPED_DIR / entry["file"]
        if path.exists() and cache.file_sha256(path) == entry["sha256"]:
            if entry["recipe_hash"] != want_recipe:
                warnings.warn(f"the shipped clip-{name} was built from an older recipe "
                              f"({entry['recipe_hash']} != {want_recipe}); run `fmcls build` to rebuild "
                              "and re-commit it", stacklevel=3)
            return path, entry["sha256"]
        warnings.warn(f"shipped weights {path} are missing or corrupt; rebuilding into the cache",
                      stacklevel=3)
    out = cache.cache_dir() / "models"
    meta_path = out / f"clip-{name}-{want_recipe}.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        path = out / meta["file"]
        if path.exists() and cache.file_sha256(path) == meta["sha256"]:
            return path, meta["sha256"]
    meta = pretrain_clip.build(name, out, progress=progress)
    final = out / f"clip-{name}-{want_recipe}.safetensors"
    os.replace(out / meta["file"], final)
    meta["file"] = final.name
    cache.atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    return final, meta["sha256"]


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
        path, sha = _embedded_weights(name, progress=progress)
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
