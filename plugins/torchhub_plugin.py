"""The ``torchhub`` model scheme, as the plugin host sees it.

The models themselves live in :mod:`.torchhub_models`, which imports torch and torch.hub: it is
imported when a ``torchhub:`` model is built, so that ``itra-bench list`` and ``--help`` stay
quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itra_bench import hookimpl
from itra_bench.model_api import ModelBuilder, ModelOptions

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

SCHEME = "torchhub"


def build_torchhub(rest: str, options: ModelOptions) -> EncoderModel:
    """Build a ``torchhub:`` model (see :func:`.torchhub_models.build_torchhub`)."""
    from .torchhub_models import build_torchhub as build

    return build(rest, options)


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``torchhub`` scheme."""
    return [ModelBuilder(
        scheme=SCHEME, build=build_torchhub,
        description="an entrypoint of a torch.hub repository on disk (local folder or the hub "
                    "cache; image features, ImageNet preprocessing)",
        example="torchhub:facebookresearch/dinov2:dinov2_vits14",
        lazy=True,
    )]
