"""On-disk cache of encoded features, so a second protocol on the same data does not re-encode.

An entry is keyed by everything that determines the features: the model fingerprint, the
dataset's identity (its contents), the split, the image transform and the precision.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from itra_bench.atomic_io import atomic_torch_save, atomic_write_json
from itra_bench.errors import UserError


def cache_key(**parts: Any) -> str:
    """A hex key for a set of named identity parts (order-independent)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """A folder of ``<key>.pt`` files holding dicts of tensors, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives."""
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The cached tensors for ``key``, or None when absent or unreadable."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            # A damaged entry is recomputed rather than failing the run.
            return None

    def put(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Store tensors for ``key``; ``meta`` is kept beside them for humans."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        try:
            atomic_torch_save(tensors, self.path(key))
            atomic_write_json(self.path(key).with_suffix(".json"), meta)
        except OSError as exc:
            raise UserError(f"--cache-dir {self.root}: cannot write {self.path(key)} "
                            f"({exc.strerror or exc}); results written so far are kept. Free "
                            "space, choose another --cache-dir, or pass --no-cache.") from exc
