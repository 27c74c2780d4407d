"""Checkpoints: what itra-train writes, and reading them back safely.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` (no pickled code): the model's weights, the optimizer,
the gradient scaler, the step and epoch, RNG states, and the full settings needed to rebuild
the model.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from itra_bench import UserError, atomic_torch_save, refusal_reason

FORMAT = "itra-train/1"


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states in weights_only-loadable types."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, **state: Any) -> Path:
    """Write a checkpoint atomically (a reader never sees a half-written file)."""
    return atomic_torch_save({"format": FORMAT, **state}, path)


def link_or_copy(source: Path, target: Path) -> Path:
    """Make ``target`` hold ``source``'s bytes, atomically: a hard link where the file system
    allows (no second write of a large file), a copy otherwise."""
    import os
    import shutil
    import tempfile

    # Unlike atomic_io's, this temp file is not locked while it lives: only the run holding
    # the run folder's lock writes and sweeps checkpoints/, never two at a time.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load(path: str | Path) -> dict[str, Any]:
    """Read an itra-train checkpoint on the CPU, with a clear message for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, pickled code, not a torch file
        raise UserError(f"{path}: cannot be read as an itra-train checkpoint with "
                        f"torch.load(weights_only=True): {type(exc).__name__}: "
                        f"{refusal_reason(exc)}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "config" not in ckpt:
        raise UserError(f"{path} is not an itra-train checkpoint (no {FORMAT!r} format tag and "
                        "config). For plain weights of a known architecture use e.g. "
                        "openclip:ARCH@FILE or timm:NAME@FILE.")
    return ckpt


def epoch_path(folder: Path, epoch: int) -> Path:
    """``checkpoints/epoch_N.pt`` of a run folder."""
    return folder / "checkpoints" / f"epoch_{epoch}.pt"


def latest_path(folder: Path) -> Path:
    """``checkpoints/epoch_latest.pt`` of a run folder."""
    return folder / "checkpoints" / "epoch_latest.pt"
