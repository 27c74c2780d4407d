"""Convolutional towers of the timm and torchvision plugins run in channels_last: their
features equal the contiguous layout's within 1e-4, a ViT is left contiguous, and the layout
is part of the fingerprint (the feature cache keys on it)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from itra_bench.model import ModelOptions
from itra_bench.plugins import image_backbone, timm_models, torchvision_models
from itra_bench.plugins.image_backbone import ImageBackbone

RANDOM = ModelOptions(random_init=True, seed=0)


def _images(model: ImageBackbone, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.stack([
        model.image_transform(Image.fromarray(
            torch.randint(0, 256, (40 + i, 48, 3), generator=g, dtype=torch.uint8).numpy()))
        for i in range(n)])


def _contiguous_features(model: ImageBackbone, images: torch.Tensor) -> torch.Tensor:
    """The same weights, run in the contiguous (NCHW) layout."""
    twin = ImageBackbone(model.net, model.image_transform, "twin", "twin")
    twin.net.to(memory_format=torch.contiguous_format)
    try:
        with torch.inference_mode():
            return twin.encode_image(images.contiguous())
    finally:
        model.net.to(memory_format=torch.channels_last)


@pytest.mark.parametrize("build, rest", [
    (torchvision_models.build_torchvision, "resnet18"),
    (timm_models.build_timm, "test_resnet"),
])
def test_conv_towers_run_channels_last_with_contiguous_features(build, rest) -> None:
    model = build(rest, RANDOM)
    assert model.channels_last
    conv = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    images = _images(model)
    with torch.inference_mode():
        ours = model.encode_image(images)
    reference = _contiguous_features(model, images)
    diff = (F.normalize(ours, dim=-1) - F.normalize(reference, dim=-1)).abs().max()
    assert float(diff) <= 1e-4


def test_a_vit_stays_contiguous() -> None:
    model = timm_models.build_timm("test_vit", RANDOM)
    assert not model.channels_last
    assert not image_backbone.is_convolutional(model.net)


@pytest.mark.parametrize("module, build, rest", [
    (torchvision_models, torchvision_models.build_torchvision, "resnet18"),
    (timm_models, timm_models.build_timm, "test_resnet"),
])
def test_the_layout_is_in_the_fingerprint(monkeypatch, module, build, rest) -> None:
    channels_last = build(rest, RANDOM)
    monkeypatch.setattr(module, "is_convolutional", lambda net: False)
    contiguous = build(rest, RANDOM)
    assert not contiguous.channels_last
    assert contiguous.fingerprint != channels_last.fingerprint
