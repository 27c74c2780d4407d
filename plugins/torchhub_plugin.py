"""The ``torchhub`` model scheme, as the plugin host sees it: its models live in
:mod:`.torchhub_models` (torch), imported only when one is built, so that ``itra-bench list``
and ``--help`` stay quick."""

from __future__ import annotations

from itra_bench import hookimpl
from itra_bench.lazy_import import LazyFactory
from itra_bench.model_api import ModelBuilder


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``torchhub`` scheme."""
    return [ModelBuilder(
        scheme="torchhub",
        build=LazyFactory("itra_bench.plugins.torchhub_models", "build_torchhub"),
        description="an entrypoint of a torch.hub repository on disk (local folder or the hub "
                    "cache; image features, ImageNet preprocessing)",
        example="torchhub:facebookresearch/dinov2:dinov2_vits14",
        lazy=True, takes_pretrained=True,
    )]
