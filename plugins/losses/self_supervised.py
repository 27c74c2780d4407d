"""Self-supervised objectives applied across the image and text views."""

from __future__ import annotations

from itra_bench.losses import LossSpec

SPECS: list[LossSpec] = []
