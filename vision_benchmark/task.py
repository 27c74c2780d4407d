"""ELEVATER's image-classification datasets as tasks (registered by ``plugin.py``): one task
per dataset card, evaluated zero-shot, by linear probe or by full-model fine-tuning on few-shot
samples, scored with the card's own metric, and leaving ELEVATER prediction files for an
EvalAI submission.

``itra-bench run --model M --tasks elevater`` runs the 20 datasets of the suite;
``--mode linear_probe --shots 5,10 --seeds 0,1,2`` the few-shot probes (one result file per
shot count and seed); ``--mode finetune`` trains the image tower with a linear head
(``vision_benchmark/finetune.py``). Fine-tuning takes task options: ``epochs=N`` (per search
run, default 10), ``final_epochs=N`` (default 50), ``train_batch_size=N`` (default 64) and
``head_init=random|text`` (``text``: the head starts from the zero-shot class embeddings, as
ELEVATER's ``INIT_HEAD_WITH_TEXT_ENCODER``; needs a text encoder). Cards live in
``itra_bench/vision_benchmark/cards/``; a card of one's own is a task file of task type
``elevater`` (``--tasks my-card.yaml``), and a plugin ships cards through
``itra_bench_task_files``.

Metrics carry itra-bench's shared names (``acc1``; ELEVATER's ``mean_per_class`` is
``mean_per_class_recall_present``, see ``vision_benchmark/metrics.py``) and are computed on
the probabilities as the prediction file stores them (6 decimals), which is what EvalAI scores;
``<main>_unrounded`` is the main metric on the unrounded probabilities. Each result carries
the per-sample outcomes that recompute its main score from those stored probabilities, ties
broken as ELEVATER breaks them (``vision_benchmark/outcomes.py``), for its confidence
interval and for paired comparisons between models.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itra_bench.context import RunContext
from itra_bench.errors import UserError
from itra_bench.model_api import IMAGE, TEXT
from itra_bench.task import Task, TaskResult, Variant, positive_int_option
from itra_bench.vision_benchmark.cards import DatasetCard, parse_card

if TYPE_CHECKING:
    import torch

    from itra_bench.model import EncoderModel
    from itra_bench.sample_outcomes import Metrics
    from itra_bench.vision_benchmark.readers import ElevaterSplit

MODES = ("zeroshot", "linear_probe", "finetune")


def variant_name(mode: str, shot: int, seed: int, knowledge: str = "none") -> str:
    """The result-file key of one run: ``zeroshot``, ``zeroshot-wordnet`` (knowledge-augmented
    prompts) or ``linear_probe-5shot-seed0``."""
    if mode == "zeroshot":
        return "zeroshot" if knowledge == "none" else f"zeroshot-{knowledge}"
    return f"{mode}-{'full' if shot == -1 else f'{shot}shot'}-seed{seed}"


def elevater_metric(name: str, probs: Any, targets: Any) -> float:
    """:func:`itra_bench.vision_benchmark.metrics.elevater_metric`, imported when first scored
    (it needs torch, which listing tasks does not load)."""
    from itra_bench.vision_benchmark.metrics import elevater_metric as metric

    return metric(name, probs, targets)


def score_predictions(card: DatasetCard, probs: Any, targets: Any) -> Metrics:
    """The result metrics of ``[N, C]`` test probabilities, under itra-bench's names, with
    the per-sample outcomes that recompute the main one
    (:func:`itra_bench.vision_benchmark.outcomes.elevater_outcomes`).

    Every metric is computed on the probabilities as the prediction file stores them (6
    decimals), which is what EvalAI scores: rounding can tie scores, and ties change 11-point
    mAP (on ``voc-2007-classification`` by more than half a point). The card's metric is also
    reported on the unrounded probabilities, as ``<name>_unrounded``. Multiclass datasets
    whose metric is not accuracy report ``acc1`` too.
    """
    import torch

    from itra_bench.sample_outcomes import Metrics
    from itra_bench.vision_benchmark.metric_names import RESULT_NAMES, UNROUNDED
    from itra_bench.vision_benchmark.outcomes import elevater_outcomes
    from itra_bench.vision_benchmark.submission import file_probabilities

    exact = torch.as_tensor(probs).double().cpu().numpy()
    stored = file_probabilities(exact)
    name = RESULT_NAMES[card.metric]
    metrics = {name: elevater_metric(card.metric, stored, targets),
               name + UNROUNDED: elevater_metric(card.metric, exact, targets)}
    if not card.multilabel and card.metric != "accuracy":
        metrics[RESULT_NAMES["accuracy"]] = elevater_metric("accuracy", stored, targets)
    return Metrics(metrics, elevater_outcomes(card.metric, stored, targets))


def _targets(split: ElevaterSplit, rows: torch.Tensor) -> torch.Tensor:
    """Targets of the given rows: [n] class indices, or [n, C] 0/1 for multilabel."""
    import torch

    if split.multilabel:
        return split.label_matrix()[rows]
    return torch.tensor(split.targets, dtype=torch.long)[rows]


@dataclass
class ElevaterTask(Task):
    """One ELEVATER dataset, under the mode and shots of the run's options."""

    # Taken from the card, which defines the task.
    name: str = field(default="", init=False)
    description: str = field(default="", init=False)
    suites: tuple[str, ...] = field(default=(), init=False)
    card: DatasetCard = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        from itra_bench.vision_benchmark.metric_names import RESULT_NAMES

        self.name = self.card.name
        self.aliases = self.card.aliases
        self.suites = self.card.suites
        self.protocol = "elevater"
        self.main_score = RESULT_NAMES[self.card.metric]
        self.modalities = frozenset({IMAGE})
        self.description = f"{self.card.num_classes} classes, {self.card.metric}"

    @property
    def layout(self) -> str:  # type: ignore[override]
        """The files the card's splits need under the data root."""
        # Computed when asked: the readers module imports PIL, and this plugin's tasks are
        # built by `itra-bench list` too.
        from itra_bench.vision_benchmark.readers import expected_layout

        return expected_layout(self.card)

    @staticmethod
    def _mode(options: Mapping[str, Any]) -> str:
        mode = options.get("mode", "zeroshot")
        if mode not in MODES:
            raise UserError(f"--mode {mode}: ELEVATER tasks run {', '.join(MODES)}")
        return mode

    def variants(self, options: Mapping[str, Any]) -> list[Variant]:
        mode = self._mode(options)
        if mode == "zeroshot":
            name = variant_name(mode, 0, 0, options.get("knowledge", "none"))
            return [Variant(name, {"shot": 0, "seed": 0})]
        return [Variant(variant_name(mode, shot, seed), {"shot": shot, "seed": seed})
                for shot in options.get("shots", [-1]) for seed in options.get("seeds", [0])]

    def required_modalities(self, options: Mapping[str, Any]) -> frozenset[str]:
        mode = self._mode(options)
        if mode == "zeroshot" or (mode == "finetune" and _head_init(options) == "text"):
            return frozenset({IMAGE, TEXT})
        return self.modalities

    def _splits(self, options: Mapping[str, Any]) -> list[str]:
        return ["test"] if self._mode(options) == "zeroshot" else ["train", "test"]

    def required_paths(self, data_root: Path, options: Mapping[str, Any]) -> list[Path]:
        return self.card.required_files(data_root, self._splits(options))

    def check_files(self, data_root: Path, options: Mapping[str, Any]) -> list[str]:
        """Problems with the files of the splits this run reads, beyond missing ones: an
        index that lists another number of images than the card states, a line that does not
        parse, a label map of the wrong length, images the zips do not hold."""
        from itra_bench.vision_benchmark.readers import missing_files, open_split

        problems: list[str] = []
        for split in self._splits(options):
            if missing_files(self.card, data_root, [split]):
                continue  # reported by required_paths
            try:
                problems += open_split(self.card, data_root, split).missing_images()
            except UserError as exc:
                problems.append(str(exc))
        return list(dict.fromkeys(problems))  # splits sharing a label map say it once

    def run(self, model: EncoderModel, ctx: RunContext) -> TaskResult:
        import torch

        from itra_bench.encoding import encode_images, encode_texts
        from itra_bench.protocols.zeroshot import build_zeroshot_classifier
        from itra_bench.threads import torch_threads
        from itra_bench.vision_benchmark.few_shot import sample_few_shot
        from itra_bench.vision_benchmark.metrics import zeroshot_probabilities
        from itra_bench.vision_benchmark.readers import open_split

        mode = self._mode(ctx.options)
        shot, seed = int(ctx.options.get("shot", 0)), int(ctx.options.get("seed", 0))
        if mode == "finetune":
            return self._finetune(model, ctx, shot, seed)
        test = open_split(self.card, ctx.data_root, "test")
        # Read every index first: a bad one stops the run before any encoding.
        train = open_split(self.card, ctx.data_root, "train") if mode != "zeroshot" else None
        test_enc = encode_images(model, test, ctx, split=f"{self.name}/test")
        test_y = _targets(test, test_enc.indices)
        details: dict[str, Any] = {"mode": mode, "n_shot": shot, "seed": seed}
        if mode == "zeroshot":
            from itra_bench.vision_benchmark.knowledge import knowledge_prompts

            kp = knowledge_prompts(list(self.card.classnames), list(self.card.templates),
                                   ctx.options.get("knowledge", "none"))
            classifier = build_zeroshot_classifier(
                lambda texts: encode_texts(model, texts, ctx, "encode class prompts"),
                list(self.card.classnames), kp.prompts)
            details.update(kp.summary())
            probs = zeroshot_probabilities(test_enc.features, classifier).cpu()
            trainable = 0
        else:
            from itra_bench.vision_benchmark.linear_probe import (
                ElevaterProbeConfig,
                elevater_linear_probe,
                elevater_probe_shots,
            )

            assert train is not None
            train_enc = encode_images(model, train, ctx, split=f"{self.name}/train")
            train_y_all = _targets(train, train_enc.indices)
            # ELEVATER samples 2 shots for 1-shot (one trains, one validates) and then
            # does not merge the validation image back.
            sample, merge = elevater_probe_shots(shot)
            rows = sample_few_shot(train_y_all, sample, seed, self.card.num_classes)
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
                    l2=ctx.options.get("l2"),
                    config=ElevaterProbeConfig(merge_train_val=merge),
                    progress=ctx.progress)
            probs = torch.as_tensor(probe.probs_test)
            trainable = self.card.num_classes * (train_enc.features.shape[1] + 1)
            details.update(num_train_images=len(rows), lr=probe.lr, l2=probe.l2,
                           val_score=probe.val_score)
        num_params = model.parameter_count()
        if test_enc.skipped:
            details["skipped_corrupt"] = test_enc.skipped
        return self._finish(model, ctx, mode, shot, seed, probs, test_y, details,
                            trainable=trainable, num_params=num_params)

    def _finish(self, model: EncoderModel, ctx: RunContext, mode: str, shot: int, seed: int,
                probs: torch.Tensor, test_y: torch.Tensor, details: dict[str, Any], *,
                trainable: int, num_params: int) -> TaskResult:
        """Score the test probabilities as the prediction file holds them, and write it."""
        # Imported here: the submission module imports numpy, and this plugin is loaded by
        # every command (`itra-bench --help` and `list` too).
        from itra_bench.vision_benchmark.submission import (
            SUFFIX,
            prediction_record,
            write_prediction_file,
        )

        metrics = score_predictions(self.card, probs, test_y)
        backbone_params = model.parameter_count()
        record = prediction_record(
            model_name=model.name, dataset_name=self.card.name, probabilities=probs.numpy(),
            seed=seed, n_shot=shot, num_trainable_params=trainable, num_params=num_params,
            num_visual_params=model.parameter_count(visual=True),
            num_backbone_params=backbone_params)
        knowledge = ctx.options.get("knowledge", "none") if mode == "zeroshot" else "none"
        path = ctx.output_dir / (variant_name(mode, shot, seed, knowledge) + SUFFIX)
        write_prediction_file(path, record)
        details["predictions"] = str(path)
        details["elevater_metric"] = self.card.metric
        return TaskResult(metrics, self.main_score, len(test_y), details)

    def _finetune(self, model: EncoderModel, ctx: RunContext, shot: int, seed: int
                  ) -> TaskResult:
        """ELEVATER's full-model fine-tuning on the ``shot``-shot sample of ``seed``."""
        import torch

        from itra_bench.encoding import encode_texts
        from itra_bench.protocols.zeroshot import build_zeroshot_classifier
        from itra_bench.vision_benchmark.few_shot import sample_few_shot
        from itra_bench.vision_benchmark.finetune import FinetuneConfig, elevater_finetune
        from itra_bench.vision_benchmark.linear_probe import elevater_probe_shots
        from itra_bench.vision_benchmark.readers import open_split

        options = ctx.options
        train = open_split(self.card, ctx.data_root, "train")
        test = open_split(self.card, ctx.data_root, "test")
        train_y_all = _targets(train, torch.arange(len(train)))
        test_y_all = _targets(test, torch.arange(len(test)))
        # ELEVATER's finetune command runs 1-shot as 2-shot, keeping the validation image out.
        sample, merge = elevater_probe_shots(shot)
        rows = sample_few_shot(train_y_all, sample, seed, self.card.num_classes)
        cfg = FinetuneConfig(epochs=positive_int_option(options, "epochs", 10),
                             extra_final_epochs=positive_int_option(options, "final_epochs", 50)
                             - positive_int_option(options, "epochs", 10),
                             batch_size=positive_int_option(options, "train_batch_size", 64),
                             merge_train_val=merge)
        head = None
        if _head_init(options) == "text":
            head = build_zeroshot_classifier(
                lambda texts: encode_texts(model, texts, ctx, "encode class prompts"),
                list(self.card.classnames), list(self.card.templates))
        result = elevater_finetune(
            model, train, rows, train_y_all[rows], test, test_y_all, self.card.num_classes,
            ctx, metric=self.card.metric, multilabel=self.card.multilabel, seed=seed,
            tune=bool(options.get("tuning", True)), lr=options.get("lr"),
            l2=options.get("l2"), head_init=head, config=cfg)
        details: dict[str, Any] = {
            "mode": "finetune", "n_shot": shot, "seed": seed,
            "num_train_images": result.num_train_images, "lr": result.lr, "l2": result.l2,
            "val_score": result.val_score, "epochs": result.epochs,
            "search_epochs": cfg.epochs, "best_epoch": result.epoch,
            "head_init": _head_init(options),
            "num_trainable_params": result.num_trainable_params,
            "train_loss": [round(x, 6) for x in result.train_loss],
        }
        if result.skipped:
            details["skipped_corrupt"] = result.skipped
        return self._finish(model, ctx, "finetune", shot, seed,
                            torch.as_tensor(result.probs_test), test_y_all[result.test_indices],
                            details, trainable=result.num_trainable_params,
                            num_params=result.num_params)


def _head_init(options: Mapping[str, Any]) -> str:
    """The ``head_init`` task option of fine-tuning: ``random`` (default) or ``text``."""
    from itra_bench.vision_benchmark.finetune import HEAD_INITS

    value = str(options.get("head_init", "random"))
    if value not in HEAD_INITS:
        raise UserError(f"--task-option head_init={value}: choose {' or '.join(HEAD_INITS)}")
    return value


def elevater_card_task(doc: dict[str, Any], path: Path) -> Task:
    """Task-file factory of the task type ``elevater``: a dataset card (fields in
    ``vision_benchmark/cards.py``) becomes the same task as a built-in card."""
    return ElevaterTask(card=parse_card(doc, path))

