"""The ``timm`` model scheme, as the plugin host sees it: its models live in :mod:`.timm_models`
(torch and timm), imported only when one is built, so that ``itra-bench list`` and ``--help``
stay quick."""

from __future__ import annotations

from itra_bench import hookimpl
from itra_bench.lazy_import import LazyFactory
from itra_bench.model_api import ModelBuilder


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``timm`` scheme."""
    return [ModelBuilder(
        scheme="timm", build=LazyFactory("itra_bench.plugins.timm_models", "build_timm"),
        description="timm image backbones (pre-logits features; weights from a local file)",
        example="timm:vit_base_patch16_224.augreg_in21k@/path/model.safetensors",
        lazy=True, takes_pretrained=True,
    )]
