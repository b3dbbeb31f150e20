"""The embedded models as data, like open_clip's ``model_configs``: every recipe (``recipes.json``), the
architectures the loaders build (``configs/`` for open_clip, :mod:`.clip`, :mod:`.dino`, :mod:`.diffusion`), and
the shipped weights' manifest (``pretrain/weights/manifest.json``).

A model is a manifest key ``<kind>-<name>`` (``clip-tiny``, ``generator-tiny``, ``ssl-tiny-dino``).  Its weights
are the shipped file, else a build in the cache (``fmcls build --models KEY``); nothing here trains.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from .. import cache, world
from ..errors import MissingModelError, UnknownNameError

HERE = Path(__file__).parent
CONFIG_DIR = HERE / "configs"  # open_clip model configs, registered by :mod:`.clip`
SHIPPED_DIR = HERE.parent / "pretrain" / "weights"
MANIFEST = SHIPPED_DIR / "manifest.json"
KINDS = ("clip", "generator", "ssl")


@functools.cache
def _families() -> dict:
    return json.loads((HERE / "recipes.json").read_text())


def recipes(kind: str) -> dict[str, dict]:
    """Name -> recipe (a dict of the builder's ``Recipe`` fields) of every embedded model of ``kind``."""
    return _families()[kind]["recipes"]


def dataclasses(kind: str, cls) -> dict:
    """Name -> ``cls(**recipe)`` for every recipe of ``kind`` (lists as tuples, as the builders' dataclasses hold
    them)."""
    return {name: cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})
            for name, r in recipes(kind).items()}


def train_code_version(kind: str) -> int:
    """Bumped (in ``recipes.json``) when a builder's training loop changes what a recipe produces."""
    return _families()[kind]["train_code_version"]


def shipped_keys() -> list[str]:
    """Manifest keys of every model the course ships, e.g. ``clip-tiny``, ``generator-tiny``."""
    return [f"{k}-{n}" for k in KINDS for n in _families()[k]["shipped"]]


def split_key(key: str) -> tuple[str, str]:
    """``(kind, name)`` of a manifest key such as ``ssl-tiny-dino``."""
    kind, _, name = key.partition("-")
    if kind not in KINDS or name not in recipes(kind):
        raise UnknownNameError("embedded model", key, [f"{k}-{n}" for k in KINDS for n in recipes(k)])
    return kind, name


SAMPLING_STEPS = 5  # DDIM steps the course samples the tiny generator with (benchmarks/bench_generation.py chose it)
RG_STEPS = 25  # Real Guidance's img2img schedule: fine enough that round(steps * strength) keeps t* near the paper's

# How each generator is meant to be sampled: classifier-free guidance scale, text-to-image steps and the Real Guidance
# (img2img) schedule.  The lessons' defaults are the "tiny" row; :func:`fmcls_lib.synthetic.sampling_settings` swaps in another
# generator's row for every parameter left at them.
GENERATOR_SETTINGS = {
    "tiny": {"guidance_scale": 4.0, "num_inference_steps": SAMPLING_STEPS, "rg_steps": RG_STEPS},  # embedded (and micro)
    # sd-turbo / sdxl-turbo: adversarially distilled for 1-4 steps without guidance (their model cards: guidance 0,
    # 1 step); RG on 8 steps runs int(8 * strength) = 1-4 of them for the paper's strengths 0.15-0.5
    "turbo": {"guidance_scale": 0.0, "num_inference_steps": 1, "rg_steps": 8},
    # Stable Diffusion 1.x / 2.x (and any other diffusers pipeline): guidance 7.5, 25 steps of its scheduler
    "stable-diffusion": {"guidance_scale": 7.5, "num_inference_steps": 25, "rg_steps": 25},
}


def generator_settings(name: str) -> dict:
    """The :data:`GENERATOR_SETTINGS` row of generator ``name`` (an embedded name, a diffusers model id or folder),
    with its key under ``"settings"``."""
    row = "tiny" if name in recipes("generator") else "turbo" if "turbo" in str(name).lower() else "stable-diffusion"
    return {**GENERATOR_SETTINGS[row], "settings": row}


def manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def open_clip_config(model: str) -> dict:
    return json.loads((CONFIG_DIR / f"{model}.json").read_text())


def recipe_hash(kind: str, recipe: dict) -> str:
    """Changes whenever the recipe, its architecture, the world or the training loop changes."""
    blob = {"recipe": recipe, "world": world.WORLD_VERSION, "code": train_code_version(kind)}
    if kind == "clip":
        blob["config"] = open_clip_config(recipe["model"])
    elif kind == "generator":
        from .diffusion import unet_config
        cfg = open_clip_config(recipes("clip")[recipe["clip"]]["model"])
        blob["unet"] = unet_config(recipe, cfg["text_cfg"]["width"], cfg["embed_dim"])
        blob["clip"] = recipe_hash("clip", recipes("clip")[recipe["clip"]])
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def cached_meta(kind: str, name: str) -> Path:
    """Where a build of ``<kind>-<name>`` into the cache keeps its manifest entry (the weights lie beside it)."""
    return cache.cache_dir() / "models" / f"{kind}-{name}-{recipe_hash(kind, recipes(kind)[name])}.json"


def _intact(path: Path, entry: dict) -> bool:
    return path.exists() and cache.file_sha256(path) == entry["sha256"]


def cached(kind: str, name: str) -> tuple[Path, dict] | None:
    """Path and manifest entry of an intact build of ``<kind>-<name>``'s current recipe in the cache, else None."""
    meta_path = cached_meta(kind, name)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if _intact(meta_path.parent / meta["file"], meta):
            return meta_path.parent / meta["file"], meta
    return None


def weights(kind: str, name: str) -> tuple[Path, str, dict]:
    """Path, sha256 and manifest entry of ``<kind>-<name>``: the shipped file if intact, else a build in the cache;
    a :class:`MissingModelError` saying what to run if neither (never a build)."""
    key, entry = f"{kind}-{name}", manifest().get(f"{kind}-{name}")
    if entry is not None and _intact(SHIPPED_DIR / entry["file"], entry):
        want = recipe_hash(kind, recipes(kind)[name])
        if entry["recipe_hash"] != want:
            import warnings
            warnings.warn(f"the shipped {key} was built from an older recipe ({entry['recipe_hash']} != {want}); "
                          f"run `fmcls build --models {key}` to rebuild and re-commit it", stacklevel=3)
        return SHIPPED_DIR / entry["file"], entry["sha256"], entry
    found = cached(kind, name)
    if found is not None:
        return found[0], found[1]["sha256"], found[1]
    state = f"{SHIPPED_DIR / entry['file']} is missing or corrupt (sha256 differs from the manifest)" if entry \
        else f"{key} is not shipped and not built in the cache ({cache.cache_dir() / 'models'})"
    took = f"about {max(1, round(entry['build_seconds'] / 60))} min on a laptop CPU" if entry else "minutes"
    raise MissingModelError(f"embedded model {key}: {state}. Build it with  fmcls build --models {key}  "
                            f"(or python -m fmcls_lib build --models {key}; takes {took}).")


def list_models() -> dict[str, list[dict]]:
    """Kind -> ``[{"name", "key", "shipped", "cached"}]`` of every embedded model: ``shipped`` whether the course
    ships it (its file intact), ``cached`` whether a build of its current recipe is in the cache."""
    m, keys = manifest(), set(shipped_keys())
    return {kind: [{"name": n, "key": f"{kind}-{n}",
                    "shipped": f"{kind}-{n}" in keys and f"{kind}-{n}" in m
                    and _intact(SHIPPED_DIR / m[f"{kind}-{n}"]["file"], m[f"{kind}-{n}"]),
                    "cached": cached(kind, n) is not None} for n in recipes(kind)] for kind in KINDS}
