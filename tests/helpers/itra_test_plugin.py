"""A plugin used by the tests: a tiny weight-free model and a couple of tasks.

Loaded with ``--plugin itra_test_plugin`` (tests/helpers is put on sys.path by conftest).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torchvision import transforms

from itra_bench import hookimpl
from itra_bench.errors import UserError
from itra_bench.model import IMAGE, TEXT, EncoderModel, ModelBuilder, ModelOptions


class PixelModel(EncoderModel):
    """Images: a fixed random projection of 8x8 pixels. Texts: a hash embedding per string."""

    #: Images encoded by any instance, so tests can see when the feature cache is used.
    images_encoded = 0

    def __init__(self, dim: int = 32, modalities: frozenset[str] = frozenset({IMAGE, TEXT})):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Parameter(torch.randn(3 * 8 * 8, dim, generator=g),
                                       requires_grad=False)
        self.modalities = modalities
        self.fingerprint = f"pixel-{dim}-{'-'.join(sorted(modalities))}"
        self.image_transform = transforms.Compose([transforms.Resize((8, 8)),
                                                   transforms.ToTensor()])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        PixelModel.images_encoded += len(images)
        return images.flatten(1) @ self.proj

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            h = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
            g = torch.Generator().manual_seed(h)
            rows.append(torch.randn(self.proj.shape[1], generator=g))
        return F.normalize(torch.stack(rows), dim=-1).to(self.device)


def _build(rest: str, options: ModelOptions) -> PixelModel:
    if rest == "image-only":
        return PixelModel(modalities=frozenset({IMAGE}))
    if rest == "text-only":
        return PixelModel(modalities=frozenset({TEXT}))
    if rest == "needs-weights" and not options.random_init:
        raise UserError("pixel:needs-weights has no weights: pass --random-init")
    return PixelModel()


@hookimpl
def itra_bench_model_builders():
    return [ModelBuilder("pixel", _build, description="test model", example="pixel")]


@hookimpl
def itra_bench_losses():
    from itra_bench.losses import LossSpec
    from itra_bench.plugins.losses.alignment import InfoNCE

    return [LossSpec("needs-teacher", InfoNCE, description="InfoNCE that claims to need a "
                     "teacher (tests the trainer's start-up check)", needs=("teacher",))]
