"""The loss contract: a named factory of training objectives, contributed by plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class LossSpec:
    """A training objective a plugin provides.

    ``factory(**kwargs)`` returns an ``nn.Module`` whose forward takes
    ``(image_features, text_features, logit_scale)`` and returns a scalar loss (or a dict of
    named terms, which are summed).

    ``needs`` names what the loss consumes beyond the two towers' features and the
    temperature, e.g. ``("teacher",)`` or ``("prototypes",)``; the trainer refuses to start
    when the configured model cannot provide it.
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    paper: str = ""
    needs: tuple[str, ...] = ()
