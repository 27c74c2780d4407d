"""The ``torchvision`` model scheme, as the plugin host sees it.

The models themselves live in :mod:`.torchvision_models`, which imports torch and torchvision: it is
imported when a ``torchvision:`` model is built, so that ``itra-bench list`` and ``--help`` stay
quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itra_bench import hookimpl
from itra_bench.model_api import ModelBuilder, ModelOptions

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

SCHEME = "torchvision"


def build_torchvision(rest: str, options: ModelOptions) -> EncoderModel:
    """Build a ``torchvision:`` model (see :func:`.torchvision_models.build_torchvision`)."""
    from .torchvision_models import build_torchvision as build

    return build(rest, options)


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``torchvision`` scheme."""
    return [ModelBuilder(
        scheme=SCHEME, build=build_torchvision,
        description="torchvision classifiers as image encoders (penultimate features; weights "
                    "from a local file or the torch hub cache)",
        example="torchvision:resnet50@IMAGENET1K_V2",
        lazy=True,
    )]
