"""Eval-time image preprocessing shared by the image model plugins: resize, centre crop,
normalise, described by a small record that also goes into the model fingerprint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: PIL resampling filters by the names configs use, and by HF's integer codes.
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}
RESAMPLE_NAMES = {int(v): k for k, v in _RESAMPLE.items()}


class ToRGB:
    """Convert a PIL image to RGB (a grey or RGBA image would otherwise break normalisation).

    A class rather than a lambda so the transform pickles into DataLoader workers.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


@dataclass(frozen=True)
class EvalTransform:
    """Resize, optional centre crop, scale to [0, 1] and normalise a PIL image.

    ``resize`` is the shorter side (an int) or an exact ``(height, width)``; ``crop`` likewise
    an int (square) or ``(height, width)``, or None for no crop. ``crop_offset`` says how the
    crop's top-left corner is rounded: ``"floor"`` (``(size - crop) // 2``, as HF image
    processors do) or ``"round"`` (``round((size - crop) / 2)``, as torchvision's CenterCrop).
    """

    resize: int | tuple[int, int]
    crop: int | tuple[int, int] | None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_offset: str = "round"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        image = image.resize(self._resized_size(image.size), _RESAMPLE[self.interpolation])
        if self.crop is not None:
            ch, cw = (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
            w, h = image.size
            if self.crop_offset == "floor":
                top, left = (h - ch) // 2, (w - cw) // 2
            else:
                top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            image = image.crop((left, top, left + cw, top + ch))
        # Same arithmetic as torchvision's to_tensor + normalize.
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (x - mean) / std

    def _resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        w, h = size
        if not isinstance(self.resize, int):
            return self.resize[1], self.resize[0]
        # Shorter side to `resize`, longer side scaled and truncated (torchvision and HF agree).
        if w <= h:
            return self.resize, int(self.resize * h / w)
        return int(self.resize * w / h), self.resize

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (goes into fingerprints, so features change with it)."""
        return {"transform": "resize-crop-normalize", **asdict(self)}


#: The usual ImageNet evaluation preprocessing: shorter side 256, centre crop 224.
IMAGENET_EVAL = EvalTransform(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                              interpolation="bilinear", crop_offset="round")


def describe_transform(transform: Callable[..., Any]) -> dict[str, Any] | str:
    """A JSON-able description of any transform, for fingerprints."""
    if isinstance(transform, EvalTransform):
        return transform.describe()
    return repr(transform)
