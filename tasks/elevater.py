"""ELEVATER's image-classification datasets as tasks: one task per dataset card, evaluated
zero-shot or by linear probe on few-shot samples, scored with the card's own metric, and
leaving ELEVATER prediction files for an EvalAI submission.

``itra-bench run --model M --tasks elevater`` runs the 20 datasets of the suite;
``--mode linear_probe --shots 5,10 --seeds 0,1,2`` the few-shot probes (one result file per
shot count and seed). Cards live in ``itra_bench/vision_benchmark/cards/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from itra_bench import hookimpl
from itra_bench.context import RunContext
from itra_bench.encoding import encode_images, encode_texts
from itra_bench.model import IMAGE, TEXT, EncoderModel
from itra_bench.protocols.zeroshot import build_zeroshot_classifier
from itra_bench.task import Task, TaskResult, Variant
from itra_bench.threads import torch_threads
from itra_bench.vision_benchmark.cards import DatasetCard, builtin_cards
from itra_bench.vision_benchmark.few_shot import sample_few_shot
from itra_bench.vision_benchmark.metrics import elevater_metric, zeroshot_probabilities
from itra_bench.vision_benchmark.readers import ElevaterSplit, expected_layout, open_split
from itra_bench.vision_benchmark.submission import (
    SUFFIX,
    prediction_record,
    write_prediction_file,
)

MODES = ("zeroshot", "linear_probe")


def variant_name(mode: str, shot: int, seed: int) -> str:
    """The result-file key of one run: ``zeroshot`` or ``linear_probe-5shot-seed0``."""
    if mode == "zeroshot":
        return "zeroshot"
    return f"{mode}-{'full' if shot == -1 else f'{shot}shot'}-seed{seed}"


def _targets(split: ElevaterSplit, rows: torch.Tensor) -> torch.Tensor:
    """Targets of the given rows: [n] class indices, or [n, C] 0/1 for multilabel."""
    if split.multilabel:
        return split.label_matrix()[rows]
    return torch.tensor(split.targets, dtype=torch.long)[rows]


@dataclass
class ElevaterTask(Task):
    """One ELEVATER dataset, under the mode and shots of the run's options."""

    card: DatasetCard = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.name = self.card.name
        self.aliases = self.card.aliases
        self.suites = self.card.suites
        self.protocol = "elevater"
        self.main_score = self.card.metric
        self.modalities = frozenset({IMAGE})
        self.description = f"{self.card.num_classes} classes, {self.card.metric}"
        self.layout = expected_layout(self.card)

    @staticmethod
    def _mode(options: Mapping[str, Any]) -> str:
        from itra_bench.errors import UserError

        mode = options.get("mode", "zeroshot")
        if mode not in MODES:
            raise UserError(f"--mode {mode}: ELEVATER tasks run {', '.join(MODES)}")
        return mode

    def variants(self, options: Mapping[str, Any]) -> list[Variant]:
        mode = self._mode(options)
        if mode == "zeroshot":
            return [Variant("zeroshot", {"shot": 0, "seed": 0})]
        return [Variant(variant_name(mode, shot, seed), {"shot": shot, "seed": seed})
                for shot in options.get("shots", [-1]) for seed in options.get("seeds", [0])]

    def required_modalities(self, options: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({IMAGE, TEXT}) if self._mode(options) == "zeroshot" else self.modalities

    def _splits(self, options: Mapping[str, Any]) -> list[str]:
        return ["test"] if self._mode(options) == "zeroshot" else ["train", "test"]

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        return self.card.required_files(data_root, self._splits(options))

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        mode = self._mode(ctx.options)
        shot, seed = int(ctx.options.get("shot", 0)), int(ctx.options.get("seed", 0))
        test = open_split(self.card, ctx.data_root, "test")
        test_enc = encode_images(model, test, ctx, split=f"{self.name}/test")
        test_y = _targets(test, test_enc.indices)
        details: dict[str, Any] = {"mode": mode, "n_shot": shot, "seed": seed}
        if mode == "zeroshot":
            classifier = build_zeroshot_classifier(
                lambda texts: encode_texts(model, texts, ctx, "encode class prompts"),
                list(self.card.classnames), list(self.card.templates))
            probs = zeroshot_probabilities(test_enc.features, classifier).cpu()
            trainable = 0
        else:
            from itra_bench.vision_benchmark.linear_probe import elevater_linear_probe

            train = open_split(self.card, ctx.data_root, "train")
            train_enc = encode_images(model, train, ctx, split=f"{self.name}/train")
            train_y_all = _targets(train, train_enc.indices)
            rows = sample_few_shot(train_y_all, shot, seed, self.card.num_classes)
            tune = bool(ctx.options.get("tuning", True))
            # The probe is thousands of tiny mini-batch steps: on a CPU one thread is ~100x
            # faster than several waiting on each other (tests/test_elevater_linear_probe.py).
            threads = torch_threads(1) if ctx.device.type == "cpu" else nullcontext()
            with threads:
                probe = elevater_linear_probe(
                    train_enc.features[rows], train_y_all[rows], test_enc.features,
                    self.card.num_classes, test_y=test_y, metric=self.card.metric,
                    multilabel=self.card.multilabel, seed=seed,
                    device=ctx.device, tune=tune, lr=ctx.options.get("lr"),
                    l2=ctx.options.get("l2"))
            probs = torch.as_tensor(probe.probs_test)
            trainable = self.card.num_classes * (train_enc.features.shape[1] + 1)
            details.update(num_train_images=len(rows), lr=probe.lr, l2=probe.l2,
                           val_score=probe.val_score)
        metrics = {self.card.metric: elevater_metric(self.card.metric, probs, test_y)}
        if not self.card.multilabel and self.card.metric != "accuracy":
            metrics["accuracy"] = elevater_metric("accuracy", probs, test_y)
        num_params = sum(p.numel() for p in model.parameters())
        record = prediction_record(
            model_name=model.name, dataset_name=self.card.name, probabilities=probs.numpy(),
            seed=seed, n_shot=shot, num_trainable_params=trainable, num_params=num_params,
            num_visual_params=sum(p.numel() for p in model.visual_parameters()),
            num_backbone_params=num_params)
        path = ctx.output_dir / (variant_name(mode, shot, seed) + SUFFIX)
        write_prediction_file(path, record)
        details["predictions"] = str(path)
        if test_enc.skipped:
            details["skipped_corrupt"] = test_enc.skipped
        return TaskResult(metrics, self.card.metric, len(test_y), details)


@hookimpl
def itra_bench_tasks() -> list[Task]:
    return [ElevaterTask(card=card) for card in builtin_cards()]
