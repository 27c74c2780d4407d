"""An image-only network (timm, torchvision, torch hub) seen through the EncoderModel contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from itra_bench.errors import UserError
from itra_bench.model import IMAGE, EncoderModel


class ImageBackbone(EncoderModel):
    """Wraps a network whose forward pass maps ``[B, 3, H, W]`` images to ``[B, D]`` features."""

    modalities = frozenset({IMAGE})

    def __init__(self, net: nn.Module, image_transform: Callable[[Any], torch.Tensor],
                 fingerprint: str, label: str) -> None:
        super().__init__()
        self.net = net
        self.image_transform = image_transform
        self.fingerprint = fingerprint
        self.label = label

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Embed preprocessed images ``[B, 3, H, W]`` into ``[B, D]``."""
        out = self.net(images.to(self.device))
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            got = f"a tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor) \
                else type(out).__name__
            raise UserError(f"{self.label} returns {got}; itra-bench needs [batch, dim] "
                            "features. Use a model or entrypoint that returns pooled features.")
        return out
