"""``colorhist``: a weight-free image model whose embedding is a per-channel colour histogram.

Spec: ``colorhist`` (8 bins per channel) or ``colorhist:BINS``. It has no weights, so it is
built without ``--random-init``, and the same spec always gives the same embedding.
"""

from __future__ import annotations

import torch
from torchvision import transforms

from itra_bench import IMAGE, EncoderModel, ModelOptions, UserError, make_fingerprint

DEFAULT_BINS = 8
#: Every image is resized to this square so that a batch stacks into one tensor.
IMAGE_SIZE = 64


class ColorHistogram(EncoderModel):
    """Embeds an image as ``3 * bins`` numbers: for each RGB channel, the fraction of pixels
    whose value falls in each of ``bins`` equal-width bins of ``[0, 1]``.

    Each channel's block sums to 1, so the embedding does not depend on the image size.
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        super().__init__()
        self.bins = bins
        self.modalities = frozenset({IMAGE})
        # Name and bump "version" whenever the embedding could change: the fingerprint keys
        # the feature cache, so a stale one would silently serve old features.
        self.fingerprint = make_fingerprint({"model": "colorhist", "bins": bins,
                                             "image_size": IMAGE_SIZE, "version": 1})
        self.image_transform = transforms.Compose([
            transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)),
            transforms.ToTensor(),  # RGB values in [0, 1]
        ])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` images in ``[0, 1]`` to ``[B, 3 * bins]`` histograms."""
        batch, channels = images.shape[:2]
        values = images.reshape(batch, channels, -1)
        # Value 1.0 would land in bin `bins`; clamping puts it in the top bin.
        index = (values * self.bins).long().clamp_(0, self.bins - 1)
        counts = torch.zeros(batch, channels, self.bins, device=images.device)
        counts.scatter_add_(2, index, torch.ones_like(values, dtype=counts.dtype))
        return (counts / values.shape[-1]).reshape(batch, channels * self.bins)


def build(rest: str, options: ModelOptions) -> ColorHistogram:
    """Build from the part of the spec after ``colorhist:`` (empty, or a bin count)."""
    if not rest:
        return ColorHistogram()
    if not rest.isdigit() or not 1 <= int(rest) <= 256:
        raise UserError(f"model spec colorhist:{rest}: the part after `colorhist:` must be a "
                        "number of bins from 1 to 256, e.g. colorhist:16")
    return ColorHistogram(int(rest))
