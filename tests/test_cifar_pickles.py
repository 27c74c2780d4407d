"""Damaged CIFAR batch pickles are refused quickly, with one message naming the file, before
anything the file claims (a length, a shape, a memo slot) is allocated."""

from __future__ import annotations

import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from itra_bench.errors import UserError
from itra_bench.tasks.classic.torchvision_formats import CifarSplit

FOLDER = "cifar-10-batches-py"


class _Claimed:
    """Pickles as a bare array of ``shape`` (numpy's placeholder, never filled in)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, self.shape, b"b")


def _write(root: Path, batch: bytes) -> None:
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = {"label_names": [f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(names, protocol=2))
    (folder / "test_batch").write_bytes(batch)


BATCHES = {
    # A 9-to-20-byte file whose first opcode claims a huge frame, bytes object or memo slot.
    "frame": b"\x80\x04\x95" + struct.pack("<Q", 2**62) + b".",
    "binbytes8": b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"x.",
    "memo": b"\x80\x02}r" + struct.pack("<I", 2**31 - 1) + b".",
    # Valid images, and labels as an array of ten billion elements that the file never holds.
    "labels": pickle.dumps({"data": np.zeros((2, 3072), np.uint8),
                            "labels": _Claimed((10**10,))}, protocol=2),
    "data": pickle.dumps({"data": _Claimed((10**7, 3072)), "labels": [0, 1]}, protocol=2),
}


@pytest.mark.parametrize("name", list(BATCHES))
def test_a_damaged_batch_is_refused_quickly(tmp_path, name):
    _write(tmp_path, BATCHES[name])
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        CifarSplit(tmp_path, "cifar10", "test")
    assert "test_batch" in str(info.value), info.value
    assert time.perf_counter() - start < 5
