"""Building the embedded models: tiny CLIPs (clip.py), the text-to-image model (diffusion.py) and the
self-supervised encoder (dino.py), with resumable, atomically checkpointed training runs.

Builders only train and write weights; their recipes and architectures come from :mod:`fmcls_lib.models`, which
the loaders read (the loaders never import this package)."""


def module(kind: str):
    """The builder of an embedded-model family: ``clip``, ``generator`` (diffusion.py) or ``ssl`` (dino.py)."""
    import importlib
    return importlib.import_module("." + {"clip": "clip", "generator": "diffusion", "ssl": "dino"}[kind], __name__)


def build_cached(kind: str, name: str, progress: bool = True) -> dict:
    """Train ``<kind>-<name>`` into the cache, where the loaders find it (``fmcls build`` of a model the course does
    not ship, such as ``clip-micro``); a generator's CLIP is built first if it is neither shipped nor cached.
    Returns the build's manifest entry."""
    import json
    import os

    from .. import cache, models
    from ..errors import MissingModelError
    needs = {"generator": ("clip", models.recipes(kind)[name].get("clip")),
             "ssl": ("ssl", models.recipes(kind)[name].get("init"))}.get(kind)
    if needs and needs[1]:  # a generator's CLIP, a curriculum stage's previous stage
        try:
            models.weights(*needs)
        except MissingModelError:
            build_cached(*needs, progress)
    meta_path = models.cached_meta(kind, name)
    meta = module(kind).build(name, meta_path.parent, progress=progress)
    final = meta_path.with_suffix(".safetensors")
    os.replace(meta_path.parent / meta["file"], final)
    meta["file"] = final.name
    cache.atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    return meta


def save_state(path, gen, objects: dict, **extra) -> None:
    """Atomically checkpoint a training run: ``objects`` (name -> anything with ``state_dict``), the data
    generator's state and ``extra`` values (step, history, seconds)."""
    import io

    import torch

    from ..cache import atomic_write_bytes
    buf = io.BytesIO()
    torch.save({**{k: o.state_dict() for k, o in objects.items()}, "gen": gen.get_state(), **extra}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path, gen, objects: dict):
    """Restore what :func:`save_state` wrote into ``objects`` and ``gen``; returns the checkpoint dict (or
    ``None`` when ``path`` is unset or absent)."""
    import torch
    if path is None or not path.exists():
        return None
    ck = torch.load(path, weights_only=False)  # our own file, written atomically by save_state
    for k, o in objects.items():
        o.load_state_dict(ck[k])
    gen.set_state(ck["gen"])
    return ck
