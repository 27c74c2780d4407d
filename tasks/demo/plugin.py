"""The ``demo`` suite: scikit-learn's bundled digits under every shared protocol.

It needs no download, so ``itra-bench run --model demo --tasks demo`` works on a fresh
machine. Images of the held-out split are evaluated; linear probe and k-NN fit on the
training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from itra_bench import hookimpl
from itra_bench.datasets.digits import DigitsCaptions, DigitsSplit
from itra_bench.generic_tasks import ClassificationTask, RetrievalTask
from itra_bench.task import Task

EMBEDDED = "embedded: scikit-learn's bundled digits (nothing to download)"
TEMPLATES = ["a handwritten digit {}.", "a photo of the number {}."]


@dataclass
class DigitsData:
    """The digits splits, as classification data."""

    layout: str = EMBEDDED

    def split(self, data_root: Path, name: str) -> DigitsSplit:
        return DigitsSplit(name)

    def required_paths(self, data_root: Path, splits: list[str]) -> list[Path]:
        return []


@dataclass
class DigitsCaptionData:
    """The held-out digits with their label phrasings as captions."""

    layout: str = EMBEDDED

    def load(self, data_root: Path) -> DigitsCaptions:
        return DigitsCaptions("test")

    def required_paths(self, data_root: Path) -> list[Path]:
        return []


def demo_tasks() -> list[Task]:
    """The five demo tasks."""
    data = DigitsData()
    common = {"data": data, "suites": ("demo",)}
    return [
        ClassificationTask(name="digits-zeroshot", protocol="zeroshot", templates=TEMPLATES,
                           description="zero-shot digit classification", **common),
        ClassificationTask(name="digits-linear-probe", protocol="linear_probe",
                           description="logistic regression on frozen image features",
                           **common),
        ClassificationTask(name="digits-knn", protocol="knn", knn_k=10,
                           description="10-NN (cosine) on frozen image features", **common),
        ClassificationTask(name="digits-clustering", protocol="clustering",
                           description="k-means (k=10) on image features: NMI, AMI", **common),
        RetrievalTask(name="digits-retrieval", data=DigitsCaptionData(), suites=("demo",),
                      description="image-caption retrieval, 3 phrasings per image"),
    ]


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return demo_tasks()
