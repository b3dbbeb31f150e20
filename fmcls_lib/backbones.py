"""Foundation models by name: the embedded tiny CLIPs and any open_clip pretrained pair.

``load_clip("tiny")`` loads the CLIP shipped with the course (``fmcls_lib/pretrain/weights``, hash-checked; the
registry :mod:`fmcls_lib.models` names its recipe and architecture, and says which ``fmcls build`` to run when a
model is missing or corrupt: nothing trains here); ``load_clip("ViT-B-32/openai")`` loads a real CLIP through
open_clip (network or a warm cache needed); ``load_clip("ViT-B-32", checkpoint="file.pt")`` loads a
local checkpoint file.  All come back as a :class:`CLIPBackbone` with the same methods.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch

from . import cache, models
from .data import to_tensor
from .errors import CorruptFileError, OfflineModelError, UnknownNameError
from .models import clip as _architectures  # noqa: F401  (registers the embedded CLIPs with open_clip and timm)
from .models import list_models  # noqa: F401  (fm.backbones.list_models(): every embedded model, shipped or cached)

EMBEDDED_CLIPS = {name: r["model"] for name, r in models.recipes("clip").items()}


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device) -> contextlib.AbstractContextManager:
    """Mixed precision (bfloat16) on CUDA; nothing on the CPU, whose numbers stay float32."""
    device = torch.device(device)
    native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.autocast("cuda", dtype=torch.bfloat16) if native else contextlib.nullcontext()  # T4/V100: float32


class _ImageEncoder:
    """What every backbone does with images: ``prepare`` them (its own), then :meth:`encode_prepared`."""

    def encode_images(self, images) -> torch.Tensor:
        return self.encode_prepared(self.prepare(images))

    @torch.no_grad()
    def encode_prepared(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 features (on the CPU) of model-ready images ``x`` (:meth:`prepare` or ``preprocess``)."""
        with autocast(self.device):
            f = self.image_model(x.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(f.float(), dim=-1).cpu()


@dataclass
class CLIPBackbone(_ImageEncoder):
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
            x = to_tensor(images, v.image_mean, v.image_std)
            if x.shape[-1] != self.image_size:
                x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bicubic",
                                                    align_corners=False)
            return x
        return torch.stack([self.preprocess(im) for im in images])

    def image_model(self, x):
        return self.model.encode_image(x)

    @torch.no_grad()
    def encode_text(self, texts) -> torch.Tensor:
        with autocast(self.device):
            f = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
        return torch.nn.functional.normalize(f.float(), dim=-1).cpu()


def _network_reachable(timeout: float = 1.0) -> bool:
    """False at once in huggingface_hub's offline mode (``HF_HUB_OFFLINE``); True behind an HTTPS proxy (a direct probe
    would fail there although downloads work); else whether the hub's endpoint (``HF_ENDPOINT``, default
    huggingface.co) answers within ``timeout`` seconds."""
    from urllib.parse import urlparse

    import huggingface_hub.constants as hub
    if hub.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(hub.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline(offline: bool = True):
    """huggingface_hub's offline mode for the calls inside only: look in the local cache, never retry the network.

    huggingface_hub reads ``$HF_HUB_OFFLINE`` once, at import, so setting the variable later does nothing (and would
    turn the rest of the process offline too); its module switch is read at every call."""
    import huggingface_hub.constants as hub
    old = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = old or offline
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = old


def _hub_cache() -> str:
    import huggingface_hub.constants as hub
    return os.environ.get("HF_HUB_CACHE") or hub.HF_HUB_CACHE


def _not_found(what: str, online: bool, err: Exception, fetch: str, local: str) -> OfflineModelError:
    cause = f"the download failed: {type(err).__name__}: {err}" if online else "the network is off"
    return OfflineModelError(
        f"{what} is not in the local Hugging Face cache ({_hub_cache()}) and {cause}. On a machine with network run "
        f"once:  {fetch}  or pass a local file: {local}.")


def parse_clip_name(name: str) -> tuple[str, str, str | None]:
    """``(kind, model, pretrained)`` of a CLIP name: ``("embedded", "tiny", None)``, ``("tag", "ViT-B-32",
    "openai")``, ``("hub", "hf-hub:org/repo", None)`` or ``("file", "ViT-B-32-quickgelu", "/path/model.pt")`` for
    ``ARCH@/path/model.pt``.  Raises :class:`UnknownNameError` for anything else, listing what is accepted."""
    if name in EMBEDDED_CLIPS:
        return "embedded", name, None
    if name.startswith("hf-hub:") and "/" in name:
        return "hub", name, None
    if "@" in name:
        arch, path = name.split("@", 1)
        if arch not in open_clip.list_models():
            raise UnknownNameError("open_clip architecture (before @)", arch, open_clip.list_models())
        return "file", arch, path
    if "/" in name:
        arch, tag = name.split("/", 1)
        if (arch, tag) not in open_clip.list_pretrained():
            raise UnknownNameError("open_clip pretrained pair", name, list(EMBEDDED_CLIPS) +
                                   [f"{a}/{t}" for a, t in open_clip.list_pretrained()])
        return "tag", arch, tag
    raise UnknownNameError("backbone", name, list(EMBEDDED_CLIPS) + [
        "<arch>/<tag>, e.g. ViT-B-32/openai", "hf-hub:<org>/<repo>", "<arch>@<local checkpoint file>"])


def _real_clip_file(kind: str, model: str, pretrained: str | None, online: bool) -> str:
    """The weights file of a tag or hub repo, from the local cache (offline) or downloaded; a clear error if neither."""
    if kind == "tag":
        fetch = f"python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{pretrained}')\""
        get = lambda: open_clip.download_pretrained(open_clip.get_pretrained_cfg(model, pretrained))  # noqa: E731
        what = f"CLIP weights {model}/{pretrained}"
    else:
        fetch = f"python -c \"import open_clip; open_clip.create_model('{model}')\""
        get = lambda: open_clip.pretrained.download_pretrained_from_hf(model[len("hf-hub:"):])  # noqa: E731
        what = f"CLIP {model}"
    arch = model if kind == "tag" else "<arch>"
    local = f"load_clip('{arch}', checkpoint='model.pt'), in a lesson  -p backbone {arch}@model.pt"
    try:
        path = get()
    except Exception as e:  # huggingface_hub / urllib raise many types for "not here"
        raise _not_found(what, online, e, fetch, local) from e
    if not path:
        raise _not_found(what, online, FileNotFoundError("no file"), fetch, local)
    return path


def load_clip(name: str = "tiny", device: str = "auto", checkpoint: str | None = None) -> CLIPBackbone:
    """Load a CLIP by name.

    ``name``: ``"tiny"`` (the course's conv-tower CLIP), ``"tiny-vit"``, ``"micro"`` (for tests), any
    ``"<arch>/<tag>"`` from ``open_clip.list_pretrained()`` (open_clip resolves the tag, so its settings come with
    it: OpenAI's QuickGELU, its mean and std), ``"hf-hub:<org>/<repo>"`` (an open_clip model on the Hugging Face
    hub), or ``"<arch>@<file>"`` / ``<arch>`` with ``checkpoint=`` a local weights file (an OpenAI checkpoint needs
    a ``-quickgelu`` arch, e.g. ``ViT-B-32-quickgelu@open_clip_model.safetensors``; the file is a state dict or
    open_clip's ``.safetensors``, not OpenAI's TorchScript ``.pt``).  Downloads need the network; without it the
    local Hugging Face cache is used, and a missing model fails at once with what to run.
    """
    if checkpoint is not None:
        name = f"{name}@{checkpoint}"
    kind, model_name, pretrained = parse_clip_name(name)
    dev = pick_device(device)
    online = False
    if kind == "embedded":
        path, sha, _ = models.weights("clip", name)
        model_name, pretrained = EMBEDDED_CLIPS[name], str(path)
    elif kind == "file":
        if not os.path.isfile(pretrained):
            raise FileNotFoundError(f"checkpoint file {pretrained!r} does not exist")
        sha = cache.file_sha256(pretrained)
        online = _network_reachable()  # some architectures fetch their tokenizer or text tower from the hub
    else:
        online = _network_reachable()
        with hub_offline(not online):
            sha = cache.file_sha256(_real_clip_file(kind, model_name, pretrained, online))
    try:
        with hub_offline(not online):
            # a tag's QuickGELU is only warned about by open_clip (its issue #771): pass the tag's setting
            quick = kind == "tag" and bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu"))
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=dev,
                                                                         force_quick_gelu=quick)
            tokenizer = open_clip.get_tokenizer(model_name)
    except RuntimeError as e:
        if "state_dict" in str(e) or "size mismatch" in str(e):
            raise CorruptFileError(f"{pretrained} does not hold weights for {model_name}: {e}") from e
        raise
    model.eval()
    shown = name if kind != "file" else f"{model_name}:{Path(pretrained).name}"
    return CLIPBackbone(shown, model, tokenizer, preprocess, sha, dev)


# ----------------------------------------------------------------------------- self-supervised encoders

@dataclass
class SSLBackbone(_ImageEncoder):
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
            return to_tensor(images, self.mean, self.std, self.image_size)  # area-resized, as in training
        return torch.stack([self.preprocess(im) for im in images])

    def image_model(self, x):
        return self.model(x)


def _timm_real(name: str, checkpoint: str | None):
    """A timm encoder with its pretrained weights and the hash of the weights file.  Without a tag (``arch`` only)
    and with a local ``checkpoint``, the architecture's DINO tag gives the settings (mean, std, size), if it has
    one: the default tag of e.g. ``vit_small_patch16_224`` is an ImageNet-21k one with mean 0.5."""
    import timm
    arch, _, tag = name.partition(".")
    if arch not in timm.list_models():
        raise UnknownNameError("timm architecture", name, list(models.recipes("ssl")) + timm.list_pretrained("*dino*"))
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint file {checkpoint!r} does not exist")
        if not tag:
            name = (timm.list_pretrained(f"{arch}.*dino*") or [name])[0]
        return timm.create_model(name, pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay={"file": checkpoint}), cache.file_sha256(checkpoint)
    online = _network_reachable()
    fetch = f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""
    with hub_offline(not online):
        try:
            path = _timm_weights_file(name)
            model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": path})
        except Exception as e:  # huggingface_hub raises many types for "not here"
            if isinstance(e, (ImportError, MemoryError)):
                raise
            raise _not_found(f"weights of {name}", online, e, fetch, f"load_ssl('{name}', checkpoint='model.safetensors')") from e
    return model, cache.file_sha256(path)


def _timm_weights_file(name: str) -> str:
    """The local file of timm model ``name``'s pretrained weights, where timm itself would fetch them from (the
    Hugging Face hub, through its cache, or a URL, through torch's), so that its hash is the hash of what loads."""
    import timm
    from huggingface_hub import hf_hub_download
    from timm.models._builder import _resolve_pretrained_source
    source, where = _resolve_pretrained_source(timm.models.get_pretrained_cfg(name).to_dict())
    if source in ("url", "file"):
        return timm.models._hub.download_cached_file(where) if source == "url" else where
    if source != "hf-hub":
        raise FileNotFoundError(f"timm model {name!r} names no weights file (source {source!r})")
    repo, names = (where[0], [where[1]]) if isinstance(where, tuple) else (where, ["model.safetensors",
                                                                                   "pytorch_model.bin"])
    repo, _, revision = repo.partition("@")
    for filename in names[:-1]:
        with contextlib.suppress(Exception):  # not in this repo (or cache): the next name timm accepts
            return hf_hub_download(repo, filename, revision=revision or None, cache_dir=_hub_cache())
    return hf_hub_download(repo, names[-1], revision=revision or None, cache_dir=_hub_cache())


def load_ssl(name: str = "tiny-dino", device: str = "auto", checkpoint: str | None = None) -> SSLBackbone:
    """Load a self-supervised image encoder: ``"tiny-dino"`` (shipped), ``"micro-dino"`` (tests), or a
    timm DINO model such as ``"vit_small_patch14_dinov2.lvd142m"`` / ``"vit_small_patch16_224.dino"``
    (network or local cache; ``checkpoint=`` a local weights file)."""
    from safetensors.torch import load_file

    from .models import dino

    dev = pick_device(device)
    if name in models.recipes("ssl"):
        recipe = models.recipes("ssl")[name]
        path, sha, entry = models.weights("ssl", name)
        model = dino.encoder(recipe["tower"], recipe["sobel"])
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in load_file(path).items()})
        return SSLBackbone(name, model.eval().to(dev), dino.MEAN, dino.STD, recipe["res"], sha, dev, info=entry)
    import timm
    model, sha = _timm_real(name, checkpoint)
    cfg = timm.data.resolve_data_config({}, model=model)
    return SSLBackbone(name, model.eval().to(dev), tuple(cfg["mean"]), tuple(cfg["std"]), cfg["input_size"][-1],
                       sha, dev, timm.data.create_transform(**cfg))


# ----------------------------------------------------------------------------- generators

class _DiffusersPipeline:
    """A real diffusers text-to-image pipeline behind the embedded pipeline's call shape (uint8 arrays).

    Every call is split into calls of the diffusers pipeline of at most ``max_batch`` images (a 512-px Stable
    Diffusion batch holds its latents, attention maps and decoded images at once: memory grows with the batch), and
    images are made at the generator's own resolution; Real Guidance's inputs are resized to it first."""

    def __init__(self, pipe, name, max_batch: int = 8):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a whole number of images per pipeline call, at least 1; got {max_batch!r}")
        self.pipe, self.name, self.max_batch, self._i2i = pipe, name, max_batch, None

    @property
    def resolution(self) -> int:
        """Side of the images in pixels: the UNet's latent size times the VAE's downsampling factor."""
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)

    def chunks(self, n_prompts: int, per_prompt: int) -> list[tuple[int, int, int]]:
        """``(first prompt, end, images per prompt)`` of each diffusers call, in output order (prompt-major), so that
        no call makes more than ``max_batch`` images."""
        if per_prompt <= self.max_batch:
            step = self.max_batch // per_prompt
            return [(i, min(i + step, n_prompts), per_prompt) for i in range(0, n_prompts, step)]
        return [(i, i + 1, min(self.max_batch, per_prompt - j)) for i in range(n_prompts)
                for j in range(0, per_prompt, self.max_batch)]

    @staticmethod
    def _np(out):
        return np.stack([np.asarray(im.convert("RGB")) for im in out.images])

    def _settings(self, guidance_scale, num_inference_steps):
        from .models import generator_settings
        s = generator_settings(self.name)
        return (s["guidance_scale"] if guidance_scale is None else guidance_scale,
                s["num_inference_steps"] if num_inference_steps is None else num_inference_steps)

    def __call__(self, prompt, num_images_per_prompt=1, guidance_scale=None, num_inference_steps=None,
                 generator=None, **kw):
        """``guidance_scale`` / ``num_inference_steps`` None: this model's settings (``models.GENERATOR_SETTINGS``)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        guidance_scale, num_inference_steps = self._settings(guidance_scale, num_inference_steps)
        r = self.resolution
        return type("ImageOutput", (), {"images": np.concatenate([self._np(self.pipe(
            prompts[a:b], num_images_per_prompt=n, guidance_scale=guidance_scale, height=r, width=r,
            num_inference_steps=num_inference_steps, generator=generator, **kw))
            for a, b, n in self.chunks(len(prompts), num_images_per_prompt)])})

    def img2img(self, prompt, image, strength=0.5, num_images_per_prompt=1, guidance_scale=None,
                num_inference_steps=None, generator=None):
        """Real Guidance: each image (uint8 array or PIL) resized to :attr:`resolution`, noised to ``strength`` and
        denoised with its prompt.  The schedule gets at least ``ceil(1 / strength)`` steps, so that
        ``int(steps * strength)``, the steps diffusers runs, is at least one."""
        import math

        from diffusers import AutoPipelineForImage2Image
        from PIL import Image
        if self._i2i is None:
            self._i2i = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._i2i.set_progress_bar_config(disable=True)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        guidance_scale, num_inference_steps = self._settings(guidance_scale, num_inference_steps)
        if strength > 0:
            num_inference_steps = max(num_inference_steps, math.ceil(1 / strength - 1e-9))
        r = self.resolution
        ims = [(im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))).convert("RGB")
               .resize((r, r), Image.BICUBIC) for im in (image if isinstance(image, list) else list(np.asarray(image)))]
        # one (prompt, image) pair per output: diffusers repeats a batch of images image-by-image but the prompts
        # prompt-by-prompt, which pairs an image with another's prompt when num_images_per_prompt > 1
        k = num_images_per_prompt
        prompts, ims = [p for p in prompts for _ in range(k)], [im for im in ims for _ in range(k)]
        return type("ImageOutput", (), {"images": np.concatenate([self._np(self._i2i(
            prompts[a:b], image=ims[a:b], strength=strength, num_images_per_prompt=1, guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps, generator=generator))
            for a, b, _ in self.chunks(len(prompts), 1)])})


def load_generator(name: str = "tiny", device: str = "auto", max_batch: int = 8):
    """A text-to-image pipeline: ``"tiny"`` (shipped, conditioned on the tiny CLIP's text tower),
    ``"micro"`` (tests), or a diffusers model id / local folder such as ``"stabilityai/sd-turbo"``.

    A diffusers pipeline is read from the local Hugging Face cache (``$HF_HUB_CACHE``) without any network request
    when the network is unreachable or ``HF_HUB_OFFLINE=1``; it makes at most ``max_batch`` images per call of the
    underlying pipeline.  Failures say their cause: transformers missing (``pip install transformers``), a local
    folder missing or not a pipeline, a model not in the cache while offline."""
    dev = pick_device(device)
    if name in models.recipes("generator"):
        from diffusers import UNet2DConditionModel
        from safetensors.torch import load_file

        from .models.diffusion import TinyText2ImagePipeline
        clip = load_clip(models.recipes("generator")[name]["clip"], device=str(dev))
        path, _, entry = models.weights("generator", name)
        unet = UNet2DConditionModel(**entry["unet_kwargs"])
        unet.load_state_dict({k: v.float() for k, v in load_file(path).items()})
        pipe = TinyText2ImagePipeline(unet.to(dev), clip)
        pipe.id, pipe.info = f"generator-{name}@{entry['sha256'][:16]}", entry
        return pipe
    if "/" not in name and not os.path.isdir(name):
        raise UnknownNameError("generator", name, list(models.recipes("generator")) +
                               ["<diffusers model id>, e.g. stabilityai/sd-turbo", "<local folder>"])
    import importlib.util
    if importlib.util.find_spec("transformers") is None:
        raise ImportError(f"diffusers pipeline {name!r} needs the transformers package (its CLIP text encoder and "
                          "tokenizer): pip install transformers", name="transformers")
    source, local_only, weights_id, cache_dir = _diffusers_source(name)
    from diffusers import AutoPipelineForText2Image
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(
            source, torch_dtype=torch.float16 if dev.type == "cuda" else torch.float32, local_files_only=local_only,
            cache_dir=cache_dir)
    except ImportError as e:
        raise ImportError(f"diffusers pipeline {name!r} needs a package that is not installed: "
                          f"pip install {e.name or 'transformers'}  ({e})", name=e.name) from e
    pipe.set_progress_bar_config(disable=True)
    if "@" not in weights_id:  # downloaded now: the revision it got names its images in the cache
        weights_id = _diffusers_source(name)[2]
    out = _DiffusersPipeline(pipe.to(dev), name, max_batch)
    out.id, out.info = weights_id, {"model": name, "source": str(source), "resolution": out.resolution}
    return out


def _diffusers_source(name: str) -> tuple[str, bool, str, str]:
    """Where a diffusers pipeline is read from: ``(name or folder, local_files_only, weights id, hub cache dir)``.

    The weights id (what generated images are cached under) is the snapshot revision for a cached hub model, a
    digest of the files' names, sizes and times for another local folder.  Raises at once, before diffusers
    looks anywhere, for a missing folder and for a hub model that is not cached while offline."""
    from huggingface_hub import constants, try_to_load_from_cache

    cache_dir = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    path = Path(name).expanduser()
    if path.is_dir() or name.startswith((".", "/", "~")):
        if not path.is_dir():
            raise FileNotFoundError(f"generator folder {str(path)!r} does not exist (a local diffusers pipeline "
                                    "folder, as written by save_pretrained, or a hub id such as stabilityai/sd-turbo)")
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"generator folder {str(path)!r} holds no model_index.json: not a diffusers "
                                    "pipeline folder (write one with pipe.save_pretrained(folder))")
        files = sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256(json.dumps([(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                                            for p in files]).encode()).hexdigest()
        return str(path), True, f"{path.resolve()}@{digest[:16]}", cache_dir
    cached = try_to_load_from_cache(name, "model_index.json", cache_dir=cache_dir)
    online = _network_reachable()
    if not isinstance(cached, str):
        if not online:
            raise OfflineModelError(
                f"diffusers pipeline {name!r} is not in the local Hugging Face cache ({cache_dir}) and the network is "
                f"off. On a machine with network run once:  python -c \"from diffusers import "
                f"AutoPipelineForText2Image as P; P.from_pretrained('{name}')\"  (or set HF_HUB_CACHE to a cache that "
                "holds it, or pass the path of a local pipeline folder; no folder of that name exists here).")
        return name, False, name, cache_dir  # downloaded by load_generator, which then asks again for the revision
    return name, not online, f"{name}@{Path(cached).parent.name[:16]}", cache_dir
