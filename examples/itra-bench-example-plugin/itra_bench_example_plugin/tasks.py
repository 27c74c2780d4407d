"""``example-digits-centroid``: how a plugin author writes a task of their own.

The task declares what it is (name, suite, modalities, protocol, main score, data layout) as
class attributes and measures in ``run``, reusing itra-bench's encoder (batched, cached) and
its classification metrics.

itra-bench imports this module (through plugin.py) on every command, ``itra-bench list`` and
``--help`` included, so torch and the modules that import it are imported inside ``run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from itra_bench import IMAGE, RunContext, Task, TaskResult

if TYPE_CHECKING:  # itra_bench.EncoderModel's module imports torch
    from itra_bench import EncoderModel


class DigitsCentroidTask(Task):
    """Nearest class-centroid classification of scikit-learn's digits.

    Each class's centroid is the mean of its L2-normalised training embeddings; a held-out
    image is scored against every centroid by cosine similarity, and the best one is its
    prediction.
    """

    name = "example-digits-centroid"
    suites = ("example",)
    modalities = frozenset({IMAGE})
    protocol = "nearest_centroid"
    main_score = "acc1"
    description = "nearest class-centroid (cosine) classification of sklearn digits"
    # The data ships with scikit-learn, so there is nothing under --data-root to check
    # (``required_paths`` keeps the base class's empty list).
    layout = "embedded: scikit-learn's bundled digits (nothing to download)"

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        import torch
        import torch.nn.functional as F

        from itra_bench import DigitsSplit, classification_metrics, encode_images

        train, test = DigitsSplit("train"), DigitsSplit("test")
        train_enc = encode_images(model, train, ctx, split="train")
        test_enc = encode_images(model, test, ctx, split="test")
        # ``indices`` maps feature rows back to source images (corrupt ones may be skipped).
        train_y = torch.tensor(train.targets)[train_enc.indices]
        test_y = torch.tensor(test.targets)[test_enc.indices]

        num_classes = len(train.classes)
        train_x = F.normalize(train_enc.features, dim=-1)
        centroids = torch.zeros(num_classes, train_x.shape[1]).index_add_(0, train_y, train_x)
        centroids = F.normalize(centroids, dim=-1)  # mean and sum have the same direction
        scores = F.normalize(test_enc.features, dim=-1) @ centroids.T

        metrics = classification_metrics(scores, test_y)
        return TaskResult(metrics, self.main_score, len(test_y),
                          {"num_train": len(train_y), "num_classes": num_classes})
