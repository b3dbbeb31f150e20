"""fmcls: the library behind the course "Classification with Foundation Models".

Notebooks teach, the library computes.  ``import fmcls_lib as fm`` then ``fm.backbones.load_clip``,
``fm.data.load``, ``fm.features.image_features``, ``fm.heads``, ``fm.prompts``, ``fm.plots``, ...
"""
from . import errors
from .errors import (CorruptFileError, FmclsError, IncompatibleWeightsError, MissingModelError,
                     OfflineModelError, UnknownNameError)

__version__ = "0.1.0"

_LAZY = ("world", "data", "cache", "backbones", "features", "prompts", "heads", "tip_adapter", "plots", "results",
         "widgets", "models", "pretrain", "evaluate", "course", "synthetic", "cafo", "training", "finetune",
         "weights", "soups", "landscape", "executors", "exercises")


def __getattr__(name):  # modules load on first use, so `import fmcls_lib` stays fast
    if name in _LAZY:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fmcls_lib' has no attribute {name!r}")


def seed_everything(seed: int = 0, threads: int | None = None):
    """Seed Python, NumPy and torch, and pin torch's intra-op thread count (``threads``, else ``$FMCLS_THREADS``,
    else 2): the thread count changes floating-point results of training, so records are made with a fixed one."""
    import os
    import random

    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(int(threads or os.environ.get("FMCLS_THREADS") or 2))


__all__ = ["errors", "FmclsError", "UnknownNameError", "IncompatibleWeightsError", "OfflineModelError",
           "CorruptFileError", "MissingModelError", "seed_everything", *_LAZY]
