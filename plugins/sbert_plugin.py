"""The ``sbert`` model scheme, as the plugin host sees it: its models live in :mod:`.sbert_models`
(torch and sentence-transformers), imported only when one is built, so that ``itra-bench list``
and ``--help`` stay quick."""

from __future__ import annotations

from itra_bench import hookimpl
from itra_bench.lazy_import import LazyFactory
from itra_bench.model_api import ModelBuilder


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``sbert`` scheme."""
    return [ModelBuilder(
        scheme="sbert", build=LazyFactory("itra_bench.plugins.sbert_models", "build_sbert"),
        description="a local sentence-transformers folder (text only; embeddings before the "
                    "final Normalize)",
        example="sbert:/path/to/all-MiniLM-L6-v2",
        lazy=True,
    )]
