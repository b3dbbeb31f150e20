"""The one record each lesson writes: ``figures/<lesson>.json`` (shape in DESIGN.md)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .cache import atomic_write_bytes

# $FMCLS_FIGURES redirects records and figures (tests use it so they never touch the committed ones)
FIGURES = Path(os.environ.get("FMCLS_FIGURES", Path(__file__).resolve().parent.parent / "figures"))


def claim(holds: bool, evidence: str) -> dict:
    return {"holds": bool(holds), "evidence": evidence}


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
