"""The one record each lesson writes: ``figures/<lesson>.json`` (shape in DESIGN.md)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .cache import atomic_write_bytes

# $FMCLS_FIGURES redirects records and figures (tests use it so they never touch the committed ones)
FIGURES = Path(os.environ.get("FMCLS_FIGURES", Path(__file__).resolve().parent.parent / "figures"))


def claim(holds: bool, evidence: str, clear: bool | None = None) -> dict:
    """One lecture claim; ``clear=False`` marks a difference within the noise of the test set."""
    out = {"holds": bool(holds), "evidence": evidence}
    if clear is not None:
        out["clear"] = bool(clear)
    return out


def noise_margin(a: float, b: float, n: int) -> float:
    """95 % margin of the difference of two accuracies each measured on ``n`` images:
    ``1.96 sqrt(a(1-a)/n + b(1-b)/n)`` (independent binomial estimates; conservative for paired ones)."""
    if n <= 0:
        raise ValueError(f"n must be a positive number of test images, got {n}")
    return 1.96 * ((a * (1 - a) + b * (1 - b)) / n) ** 0.5


def compare(a: float, b: float, n: int, what: str = "") -> dict:
    """The claim "``a`` beats ``b``" for two accuracies on ``n`` test images: ``holds`` iff ``a > b``; ``clear``
    iff the difference exceeds :func:`noise_margin`.  The evidence string states both numbers and the margin."""
    m = noise_margin(a, b, n)
    clear = abs(a - b) > m
    return claim(a > b, f"{what}{a:.3f} vs {b:.3f} (95 % margin ±{m:.3f}: {'clear' if clear else 'within noise'})", clear)


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item"):
        x = x.item()
    return round(x, 4) if isinstance(x, float) else x


def write(lesson: str, params: dict, metrics: dict, claims: dict, out_dir=None, **extra) -> Path:
    """Atomically write the lesson record; ``metrics``: method -> domain (or shots) -> accuracy."""
    path = Path(out_dir or FIGURES) / f"{lesson}.json"
    record = {"lesson": lesson, "params": params, "metrics": metrics, "claims": claims, **extra}
    atomic_write_bytes(path, (json.dumps(_clean(record), indent=1) + "\n").encode())
    return path


def read(lesson: str, out_dir=None) -> dict:
    return json.loads((Path(out_dir or FIGURES) / f"{lesson}.json").read_text())


def table(claims: dict):
    """The claims as a table for the notebook: holds, whether the difference is clear of noise, evidence."""
    import pandas as pd

    return pd.DataFrame({k: {"holds": c["holds"], "clear of noise": c.get("clear", ""), "evidence": c["evidence"]}
                         for k, c in claims.items()}).T
