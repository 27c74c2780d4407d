"""The ``hf`` model scheme, as the plugin host sees it: its models live in :mod:`.hf_models` (torch
and transformers), imported only when one is built, so that ``itra-bench list`` and ``--help``
stay quick."""

from __future__ import annotations

from itra_bench import hookimpl
from itra_bench.lazy_import import LazyFactory
from itra_bench.model_api import ModelBuilder


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``hf`` scheme."""
    return [ModelBuilder(
        scheme="hf", build=LazyFactory("itra_bench.plugins.hf_models", "build_hf"),
        description="a local HuggingFace transformers folder: CLIP-like image-text models, or "
                    "text encoders with mean/CLS pooling (--text-pooler)",
        example="hf:/path/to/saved_model",
        lazy=True,
    )]
