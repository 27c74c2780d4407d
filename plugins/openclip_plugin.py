"""The ``openclip`` model scheme, as the plugin host sees it: its models live in
:mod:`.openclip_models` (torch and open_clip), imported only when one is built, so that ``itra-
bench list`` and ``--help`` stay quick."""

from __future__ import annotations

from itra_bench import hookimpl
from itra_bench.lazy_import import LazyFactory
from itra_bench.model_api import ModelBuilder


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``openclip`` scheme."""
    return [ModelBuilder(
        scheme="openclip",
        build=LazyFactory("itra_bench.plugins.openclip_models", "build_openclip"),
        description="OpenCLIP image-text models (built-in architecture, JSON config or folder; "
                    "weights from a local file or the local pretrained cache)",
        example="openclip:ViT-B-32@/path/weights.pt",
        lazy=True, takes_pretrained=True,
    )]
