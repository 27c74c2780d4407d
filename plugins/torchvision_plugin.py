"""The ``torchvision`` model scheme, as the plugin host sees it: its models live in
:mod:`.torchvision_models` (torch and torchvision), imported only when one is built, so that
``itra-bench list`` and ``--help`` stay quick."""

from __future__ import annotations

from itra_bench import hookimpl
from itra_bench.lazy_import import LazyFactory
from itra_bench.model_api import ModelBuilder


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """The ``torchvision`` scheme."""
    return [ModelBuilder(
        scheme="torchvision",
        build=LazyFactory("itra_bench.plugins.torchvision_models", "build_torchvision"),
        description="torchvision classifiers as image encoders (penultimate features; weights "
                    "from a local file or the torch hub cache)",
        example="torchvision:resnet50@IMAGENET1K_V2",
        lazy=True, takes_pretrained=True,
    )]
