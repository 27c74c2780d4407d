"""The ``openclip`` model scheme, as the plugin host sees it.

The models themselves live in :mod:`.openclip_models`, which imports torch and open_clip: it is
imported when a ``openclip:`` model is built, so that ``itra-bench list`` and ``--help`` stay
quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itra_bench import hookimpl
from itra_bench.model_api import ModelBuilder, ModelOptions

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

SCHEME = "openclip"


def build_openclip(rest: str, options: ModelOptions) -> EncoderModel:
    """Build a ``openclip:`` model (see :func:`.openclip_models.build_openclip`)."""
    from .openclip_models import build_openclip as build

    return build(rest, options)


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``openclip`` scheme."""
    return [ModelBuilder(
        scheme=SCHEME, build=build_openclip,
        description="OpenCLIP image-text models (built-in architecture, JSON config or folder; "
                    "weights from a local file or the local pretrained cache)",
        example="openclip:ViT-B-32@/path/weights.pt",
        lazy=True,
    )]
