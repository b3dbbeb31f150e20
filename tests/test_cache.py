import os

import pytest
import torch

from fmcls_lib import cache


def test_miss_then_hit_without_recompute():
    key = {"what": "t1", "n": 1}
    calls = []
    v1 = cache.get_or_compute("unit", key, lambda: calls.append(1) or torch.arange(5))
    v2 = cache.get_or_compute("unit", key, lambda: calls.append(1) or torch.zeros(5))
    assert calls == [1]
    assert torch.equal(v1, v2)


def test_corrupt_entry_is_detected_and_recomputed():
    key = {"what": "t2"}
    cache.put("unit", key, torch.ones(100))
    path = cache.entry_path("unit", key)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.get("unit", key) is None
    assert not path.exists()
    path.write_bytes(b"garbage without header")
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.get("unit", key) is None


def test_truncated_entry_is_detected():
    key = {"what": "t3"}
    cache.put("unit", key, torch.randn(1000))
    path = cache.entry_path("unit", key)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.warns(UserWarning):
        assert cache.get("unit", key) is None


def test_stale_entry_with_other_key_is_not_used(monkeypatch):
    cache.put("unit", {"what": "a"}, torch.ones(3))
    # simulate a digest collision / renamed file: the header's key does not match the request
    monkeypatch.setattr(cache, "entry_path", lambda ns, key: cache.cache_dir() / "unit" /
                        f"{cache.key_digest({'what': 'a'})}.pt")
    with pytest.warns(UserWarning, match="stale"):
        assert cache.get("unit", {"what": "b"}) is None


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "x.bin"
    cache.atomic_write_bytes(target, b"old")

    with pytest.raises(TypeError):
        cache.atomic_write_bytes(target, object())  # fails mid-write
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FMCLS_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c" and os.path.isdir(tmp_path / "c")
