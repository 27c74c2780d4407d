"""Knowledge distillation from a frozen teacher."""

from __future__ import annotations

from itra_bench.losses import LossSpec

SPECS: list[LossSpec] = []
