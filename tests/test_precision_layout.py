"""Convolutional towers of the timm, torchvision, torch hub and OpenCLIP plugins run in
channels_last: their features equal the contiguous layout's within 1e-4, a ViT is left
contiguous, and the layout is part of the fingerprint (the feature cache keys on it)."""

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


#: A tiny OpenCLIP model with a ModifiedResNet image tower (as RN50's, smaller).
RN_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_openclip_resnet_towers_run_channels_last_with_contiguous_features(tmp_path,
                                                                           monkeypatch) -> None:
    import json

    from itra_bench.plugins import openclip_models

    cfg = tmp_path / "rn.json"
    cfg.write_text(json.dumps(RN_CFG))
    model = openclip_models.build_openclip(str(cfg), RANDOM)
    assert model.channels_last
    conv = next(m for m in model.clip.visual.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.stack([model.image_transform(Image.new("RGB", (70 + i, 64), (9 * i, 80, 7)))
                          for i in range(3)])
    with torch.inference_mode():
        ours = model.encode_image(images)
        model.clip.visual.to(memory_format=torch.contiguous_format)
        reference = model.clip.encode_image(images.contiguous())
    diff = (F.normalize(ours, dim=-1) - F.normalize(reference, dim=-1)).abs().max()
    assert float(diff) <= 1e-4
    monkeypatch.setattr(openclip_models, "is_convolutional", lambda net: False)
    contiguous = openclip_models.build_openclip(str(cfg), RANDOM)
    assert not contiguous.channels_last and contiguous.fingerprint != model.fingerprint


def test_openclip_vit_towers_stay_contiguous(tmp_path) -> None:
    import json

    from itra_bench.plugins import openclip_models

    cfg = dict(RN_CFG, vision_cfg={"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                   "head_width": 16})
    (tmp_path / "vit.json").write_text(json.dumps(cfg))
    assert not openclip_models.build_openclip(str(tmp_path / "vit.json"), RANDOM).channels_last


def test_torchhub_conv_towers_run_channels_last(tmp_path) -> None:
    from itra_bench.plugins.torchhub_models import build_torchhub

    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "hubconf.py").write_text(
        "from torch import nn\n"
        "def twoconv():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten())\n")
    model = build_torchhub(f"{tmp_path / 'repo'}:twoconv", RANDOM)
    assert model.channels_last
    images = _images(model)
    with torch.inference_mode():
        ours = model.encode_image(images)
    reference = _contiguous_features(model, images)
    assert float((F.normalize(ours, dim=-1) - F.normalize(reference, dim=-1)).abs().max()) <= 1e-4
