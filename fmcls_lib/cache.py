"""Content-addressed disk cache with atomic writes and a hash check on every read.

Each entry is one file: a JSON header line (the key it was made for and the SHA-256 of the payload)
followed by the ``torch.save`` payload.  A hit costs one file read plus a hash; a truncated, corrupt or
stale entry (header key differs from the requested key) is reported and recomputed, never used.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch


def cache_dir() -> Path:
    """``$FMCLS_CACHE``, default ``~/.cache/fmcls``."""
    d = Path(os.environ.get("FMCLS_CACHE", Path.home() / ".cache" / "fmcls"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; caches and shipped files are plain readable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def entry_path(namespace: str, key: dict) -> Path:
    return cache_dir() / namespace / f"{key_digest(key)}.pt"


def put(namespace: str, key: dict, value) -> Path:
    buf = io.BytesIO()
    torch.save(value, buf)
    payload = buf.getvalue()
    header = json.dumps({"key": key, "sha256": hashlib.sha256(payload).hexdigest()},
                        sort_keys=True, default=str).encode()
    path = entry_path(namespace, key)
    atomic_write_bytes(path, header + b"\n" + payload)
    return path


def get(namespace: str, key: dict):
    """The cached value, or ``None`` on a miss.  Corrupt or stale entries are removed and missed."""
    path = entry_path(namespace, key)
    if not path.exists():
        return None
    raw = path.read_bytes()
    try:
        head, payload = raw.split(b"\n", 1)
        header = json.loads(head)
        ok = header["sha256"] == hashlib.sha256(payload).hexdigest()
        stale = json.dumps(header["key"], sort_keys=True, default=str) != json.dumps(
            key, sort_keys=True, default=str)
    except (ValueError, KeyError):
        ok, stale = False, False
    if not ok or stale:
        warnings.warn(f"cache entry {path} is {'stale' if ok else 'corrupt'}; recomputing it",
                      stacklevel=2)
        path.unlink(missing_ok=True)
        return None
    return torch.load(io.BytesIO(payload), weights_only=True)


def get_or_compute(namespace: str, key: dict, compute):
    value = get(namespace, key)
    if value is None:
        value = compute()
        put(namespace, key, value)
    return value
