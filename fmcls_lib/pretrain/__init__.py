"""Building the embedded models: tiny CLIPs (clip.py), the text-to-image model (diffusion.py) and the
self-supervised encoder (dino.py), with resumable, atomically checkpointed training runs."""


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
