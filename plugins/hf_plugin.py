"""The ``hf`` model scheme, as the plugin host sees it.

The models themselves live in :mod:`.hf_models`, which imports torch and transformers: it is
imported when a ``hf:`` model is built, so that ``itra-bench list`` and ``--help`` stay
quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itra_bench import hookimpl
from itra_bench.model_api import ModelBuilder, ModelOptions

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

SCHEME = "hf"


def build_hf(rest: str, options: ModelOptions) -> EncoderModel:
    """Build a ``hf:`` model (see :func:`.hf_models.build_hf`)."""
    from .hf_models import build_hf as build

    return build(rest, options)


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``hf`` scheme."""
    return [ModelBuilder(
        scheme=SCHEME, build=build_hf,
        description="a local HuggingFace transformers folder: CLIP-like image-text models, or "
                    "text encoders with mean/CLS pooling (--pooler)",
        example="hf:/path/to/saved_model",
        lazy=True,
    )]
