"""Temporarily changing torch's intra-op thread count."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads, then restore the previous count.

    For work made of many tiny operations (per-image transforms, mini-batch SGD on a linear
    head): there, waiting for a second thread costs more than the work, and far more when
    another process holds a core.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
