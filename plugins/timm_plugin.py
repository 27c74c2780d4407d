"""The ``timm`` model scheme, as the plugin host sees it.

The models themselves live in :mod:`.timm_models`, which imports torch and timm: it is
imported when a ``timm:`` model is built, so that ``itra-bench list`` and ``--help`` stay
quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itra_bench import hookimpl
from itra_bench.model_api import ModelBuilder, ModelOptions

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

SCHEME = "timm"


def build_timm(rest: str, options: ModelOptions) -> EncoderModel:
    """Build a ``timm:`` model (see :func:`.timm_models.build_timm`)."""
    from .timm_models import build_timm as build

    return build(rest, options)


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``timm`` scheme."""
    return [ModelBuilder(
        scheme=SCHEME, build=build_timm,
        description="timm image backbones (pre-logits features; weights from a local file)",
        example="timm:vit_base_patch16_224.augreg_in21k@/path/model.safetensors",
        lazy=True,
    )]
