"""A benchmark-only model scheme: ``contiguous+SCHEME:REST`` builds ``SCHEME:REST`` (torchvision
or timm) as itra-bench does, then runs it in the contiguous (NCHW) layout instead of
channels_last, under its own fingerprint. ``bench_precision.py`` loads it with ``--plugin``."""

from __future__ import annotations

from typing import Any

import torch

from itra_bench import hookimpl
from itra_bench.fingerprint import fingerprint
from itra_bench.model import ModelBuilder, ModelOptions

SCHEME = "contiguous+"


def _builder(scheme: str) -> Any:
    def build(rest: str, options: ModelOptions) -> Any:
        if scheme == "torchvision":
            from itra_bench.plugins.torchvision_models import build_torchvision as inner
        else:
            from itra_bench.plugins.timm_models import build_timm as inner
        model = inner(rest, options)
        model.net.to(memory_format=torch.contiguous_format)
        model.channels_last = False
        model.fingerprint = fingerprint({"contiguous_of": model.fingerprint})
        return model

    return build


@hookimpl
def itra_bench_model_builders() -> list[ModelBuilder]:
    """``contiguous+torchvision`` and ``contiguous+timm``."""
    return [ModelBuilder(scheme=f"{SCHEME}{s}", build=_builder(s),
                         description=f"{s} models in the contiguous layout (benchmark only)",
                         example=f"{SCHEME}{s}:resnet50") for s in ("torchvision", "timm")]
