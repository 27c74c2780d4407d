"""An image-only network (timm, torchvision, torch hub) seen through the EncoderModel contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from itra_bench.errors import UserError
from itra_bench.model import IMAGE, EncoderModel

#: What a builder adds to its fingerprint config for a tower run in channels_last.
CHANNELS_LAST = {"memory_format": "channels_last"}


def is_convolutional(net: nn.Module) -> bool:
    """Whether ``net`` is a convolutional image tower (more than one 2-D convolution), whose
    convolutions are faster in channels_last; a ViT's single patch-embedding convolution does
    not count."""
    return sum(isinstance(m, nn.Conv2d) for m in net.modules()) > 1


class ImageBackbone(EncoderModel):
    """Wraps a network whose forward pass maps ``[B, 3, H, W]`` images to ``[B, D]`` features."""

    modalities = frozenset({IMAGE})

    def __init__(self, net: nn.Module, image_transform: Callable[[Any], torch.Tensor],
                 fingerprint: str, label: str, channels_last: bool = False) -> None:
        super().__init__()
        #: Weights and input batches in channels_last (NHWC) layout: oneDNN's convolutions
        #: need about 30 % less CPU in it (ResNet-50, benchmarks/bench_precision.py). The builder
        #: decides, and puts the layout into the fingerprint, since features change in the
        #: last bits.
        self.channels_last = channels_last
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.image_transform = image_transform
        self.fingerprint = fingerprint
        self.label = label

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Embed preprocessed images ``[B, 3, H, W]`` into ``[B, D]``."""
        images = images.to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out = self.net(images)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            got = f"a tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor) \
                else type(out).__name__
            raise UserError(f"{self.label} returns {got}; itra-bench needs [batch, dim] "
                            "features. Use a model or entrypoint that returns pooled features.")
        return out
