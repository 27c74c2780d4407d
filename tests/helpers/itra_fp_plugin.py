"""A plugin that gets identity wrong on purpose: a model family without a fingerprint, and a
task whose image source has no identity (loaded with ``--plugin itra_fp_plugin``)."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms

from itra_bench import Metric, hookimpl
from itra_bench.datasets.image_source import ImageSource
from itra_bench.encoding import encode_images
from itra_bench.model import IMAGE, EncoderModel, ModelBuilder
from itra_bench.task import Task, TaskResult


class ScaledMean(EncoderModel):
    """Image embedding: the per-channel pixel mean times ``scale``; no fingerprint set."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.modalities = frozenset({IMAGE})
        self.image_transform = transforms.Compose([transforms.Resize((4, 4)),
                                                   transforms.ToTensor()])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3)) * self.scale


class Squares(ImageSource):
    """Four solid squares; its ``identity`` is left empty unless ``identity`` is given."""

    def __init__(self, identity: str = "") -> None:
        self.identity = identity

    def __len__(self) -> int:
        return 4

    def open_image(self, index: int) -> Image.Image:
        return Image.new("RGB", (8, 8), (60 * index, 10, 10))


class SquaresTask(Task):
    """Returns the mean of the first feature column as its score."""

    name = "fp-squares"
    modalities = frozenset({IMAGE})
    protocol = "squares"
    main_score = "mean"
    source_identity = ""

    def run(self, model: EncoderModel, ctx) -> TaskResult:
        enc = encode_images(model, Squares(self.source_identity), ctx, split="squares")
        return TaskResult({"mean": float(enc.features[:, 0].mean())}, "mean", 4)


class AnonymousSourceTask(SquaresTask):
    name = "fp-anonymous-source"


class NamedSourceTask(SquaresTask):
    name = "fp-named-source"
    source_identity = "squares-v1"


@hookimpl
def itra_bench_model_builders():
    return [ModelBuilder("nofp", lambda rest, options: ScaledMean(float(rest or 1)),
                         description="no fingerprint (test)")]


@hookimpl
def itra_bench_tasks():
    return [AnonymousSourceTask(), NamedSourceTask()]


@hookimpl
def itra_bench_metrics():
    return [Metric("mean", "the mean of the first feature column")]
