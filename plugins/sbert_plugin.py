"""The ``sbert`` model scheme, as the plugin host sees it.

The models themselves live in :mod:`.sbert_models`, which imports torch and
sentence-transformers: it is imported when a ``sbert:`` model is built, so that
``itra-bench list`` and ``--help`` stay quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itra_bench import hookimpl
from itra_bench.model_api import ModelBuilder, ModelOptions

if TYPE_CHECKING:
    from itra_bench.model import EncoderModel

SCHEME = "sbert"


def build_sbert(rest: str, options: ModelOptions) -> EncoderModel:
    """Build a ``sbert:`` model (see :func:`.sbert_models.build_sbert`)."""
    from .sbert_models import build_sbert as build

    return build(rest, options)


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``sbert`` scheme."""
    return [ModelBuilder(
        scheme=SCHEME, build=build_sbert,
        description="a local sentence-transformers folder (text only; embeddings before the "
                    "final Normalize)",
        example="sbert:/path/to/all-MiniLM-L6-v2",
        lazy=True,
    )]
