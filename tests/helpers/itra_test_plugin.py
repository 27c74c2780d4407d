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


class StoppingPixelModel(PixelModel):
    """PixelModel whose rank ``RANK`` (of a torchrun job) dies (``kill``: SIGKILL, like a lost
    node) or hangs (``hang``) before encoding its ``at``-th image batch; other ranks and a
    one-process run encode normally. Same fingerprint as ``pixel``: its cache is shared."""

    def __init__(self, how: str, rank: int, at: int) -> None:
        super().__init__()
        self.how, self.rank, self.at, self.batches = how, rank, at, 0

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        import os
        import signal
        import time

        if int(os.environ.get("RANK", "-1")) == self.rank:
            self.batches += 1
            if self.batches == self.at:
                if self.how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(3600)
        return super().encode_image(images)


def _build(rest: str, options: ModelOptions) -> PixelModel:
    # pixel:kill-rank1-at3 / pixel:hang-rank1-at3 (distributed tests); pixel:dim16
    if rest.startswith(("kill-rank", "hang-rank")):
        how, rank, at = rest.replace("-rank", "-").replace("-at", "-").split("-")
        return StoppingPixelModel(how, int(rank), int(at))
    if rest.startswith("dim"):
        return PixelModel(dim=int(rest[3:]))
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
