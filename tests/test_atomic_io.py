"""Atomic writes: an interrupted write leaves the previous file intact and no debris."""

from __future__ import annotations

import pytest
import torch

from itra_bench.atomic_io import atomic_torch_save, atomic_write, atomic_write_json
from itra_bench.feature_cache import FeatureCache, cache_key


def test_failed_write_keeps_previous_content(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": 1})

    def explode(f):
        f.write(b'{"a": 2, "trunc')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, explode)
    assert path.read_text().strip() == '{\n  "a": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_feature_cache_roundtrip_and_damaged_entry(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(model="m", dataset="d")
    assert cache.get(key) is None
    cache.put(key, {"features": torch.arange(6.0).view(2, 3)}, meta={"x": 1})
    assert torch.equal(cache.get(key)["features"], torch.arange(6.0).view(2, 3))
    assert key != cache_key(model="m", dataset="d2")
    cache.path(key).write_bytes(b"garbage")
    assert cache.get(key) is None  # recomputed, not a crash
    atomic_torch_save({"features": torch.ones(1)}, cache.path(key))
    assert cache.get(key)["features"].item() == 1.0
