"""The loss contract: a named factory of training objectives, contributed by plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class LossSpec:
    """A training objective a plugin provides.

    ``factory(**kwargs)`` returns an ``nn.Module`` whose forward takes
    ``(image_features, text_features, logit_scale)`` and returns a scalar loss.
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    paper: str = ""
