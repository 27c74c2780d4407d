"""Built-in training objectives, one small class per objective.

- :mod:`.alignment`: image-text alignment (InfoNCE, ProtoCLIP).
- :mod:`.distillation`: knowledge distillation from a frozen teacher.
- :mod:`.self_supervised`: self-supervised objectives applied across the image and text views.

The contract every loss follows is :class:`itra_bench.losses.LossSpec`'s docstring.
"""

from __future__ import annotations

from itra_bench import hookimpl
from itra_bench.losses import LossSpec

from . import alignment, distillation, self_supervised


@hookimpl
def itra_bench_losses() -> list[LossSpec]:
    return [*alignment.SPECS, *distillation.SPECS, *self_supervised.SPECS]
