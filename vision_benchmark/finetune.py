"""ELEVATER's full-model fine-tuning protocol: the image tower and a linear head, trained
end to end on (few-shot) images.

What ELEVATER does (``vision_benchmark/commands/finetune.py`` ->
``full_model_finetune`` in ``vision_benchmark/evaluation/full_model_finetune.py``, the data in
``construct_dataloader`` of ``vision_benchmark/evaluation/feature.py``, the optimiser in
``build_optimizer`` of ``vision_benchmark/optim/build.py``, the defaults of
``vision_benchmark/config/default.py`` and the ``TRAIN`` block of its model configs, e.g.
``vision_benchmark/resources/model/react_vitb32_CLIP.yaml``):

- **Model** (``Classifier``). A freshly loaded copy of the pretrained model's image encoder,
  every image-tower parameter trainable; a CLIP model's text-tower parameters (and its
  ``logit_scale``) are frozen. On its image features: ``BatchNorm1d(D, affine=False)``
  (``USE_CHANNEL_BN``), then ``Linear(D, C)``, times ``exp(logit_scale) = 1``
  (``LOGIT_SCALE_INIT='none'``, not trainable). With ``TRAIN.INIT_HEAD_WITH_TEXT_ENCODER``
  (off in ``default.py``, on in the ``run.sh`` launcher) the head's weight rows are the
  zero-shot class embeddings (template ensemble, unit norm) and its bias is 0; otherwise
  ``nn.Linear``'s default initialisation. ``MERGE_ENCODER_AND_HEAD_PROJ`` (off) is not
  reproduced.
- **Loss and optimiser.** ``CrossEntropyLoss`` (``BCEWithLogitsLoss`` for multilabel
  datasets); SGD, momentum 0.9, no Nesterov, weight decay ``l2`` on every trainable
  parameter, constant learning rate (``TRAIN.SCHEDULE = []``: ``adjust_learning_rate`` ignores
  the configs' ``LR_SCHEDULER``). ``model.train()`` while training (dropout, batch norm in
  training mode), ``model.eval()`` while evaluating.
- **Data.** Training images go through the *evaluation* transform (resize, centre crop,
  normalise): ELEVATER's fine-tuning uses no augmentation. Mini-batches of 64
  (``TRAIN.BATCH_SIZE_PER_GPU``) from a ``DataLoader(shuffle=True)`` whose generator is seeded 0
  for every run; a one-image batch is skipped.
- **Epochs.** 10 per search run; the final run trains ``10 + EXTRA_FINAL_TRAIN_EPOCH = 50``.
  A search run's score is its best epoch's metric on the validation split.
- **Search.** The linear probe's: learning rates ``logspace(-6, -1, 6)``, for each an ``l2``
  search on ``logspace(-6, 6, 97)`` (7 coarse points, then spans 8, 4, 2, 1 around the best
  index), validation = ELEVATER's 20 % carve-out of the few-shot set; the final run trains on
  train + validation. ``--no-tuning --lr --l2`` skips the search. 1-shot is run as 2-shot
  without merging (``commands/finetune.py``). See
  :mod:`itra_bench.vision_benchmark.linear_probe` for the details both share.
- **Predictions.** The final run evaluates the test split after every epoch and keeps the
  softmax probabilities of the epoch with the best test score (strictly better than all
  earlier ones). ``num_trainable_params`` counts every parameter that receives gradients:
  the image tower and the head.

Deviations: each run starts from a deep copy of the model object it is given (ELEVATER
reloads the checkpoint; the same weights), and the original is never modified; the head is
initialised from ``seed`` (ELEVATER draws it from the global generator), and dropout is
seeded per run, so runs are reproducible on CPU; a candidate already trained in the search
is not trained again (ELEVATER retrains it, from a different random head); an exception in
a search run is not turned into a score of 0 (ELEVATER's bare ``except``), it stops the run.
Forward passes run under the run's ``--precision`` autocast, with loss scaling for
``amp_fp16``.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from itra_bench.context import RunContext
from itra_bench.datasets.image_source import ImageSource, load_rgb
from itra_bench.encoding import loader_batches
from itra_bench.errors import CorruptImageError
from itra_bench.model import EncoderModel
from itra_bench.vision_benchmark.few_shot import elevater_train_val_split
from itra_bench.vision_benchmark.linear_probe import ElevaterProbeConfig, _linear_init, _score

HEAD_INITS = ("random", "text")


@dataclass(frozen=True)
class FinetuneConfig(ElevaterProbeConfig):
    """Training settings of ELEVATER's fine-tuning: the same TRAIN block of its model configs
    as the linear probe (epochs, batch, SGD momentum, validation part, search grids)."""


@dataclass
class FinetuneResult:
    """Outcome of :func:`elevater_finetune`.

    ``probs_test``: ``[N, C]`` float32 softmax probabilities for the test images that decoded,
    whose rows in the test source are ``test_indices`` (all of them, in order, unless corrupt
    images were skipped; those are named in ``skipped``). ``lr``, ``l2``: the final run's
    hyperparameters; ``val_score``: the chosen pair's validation score (fraction) during the
    search, ``None`` without one; ``test_score``: the test metric of ``probs_test``;
    ``epoch``: the 1-based final-run epoch the probabilities come from, of ``epochs``;
    ``train_loss``: the final run's mean training loss per epoch; ``num_trainable_params``:
    image tower + head; ``num_params``: the whole model + head; ``trace``: every
    ``(lr, l2, val_score)`` the search evaluated, in order.
    """

    probs_test: np.ndarray
    test_indices: Tensor
    lr: float
    l2: float
    val_score: float | None
    test_score: float | None
    epoch: int
    epochs: int
    num_train_images: int
    num_trainable_params: int
    num_params: int
    train_loss: list[float] = field(default_factory=list)
    trace: list[tuple[float, float, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class FinetuneClassifier(nn.Module):
    """ELEVATER's ``Classifier``: image encoder -> ``BatchNorm1d(affine=False)`` -> ``Linear``."""

    def __init__(self, backbone: EncoderModel, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        num_classes, dim = weight.shape
        self.channel_bn = nn.BatchNorm1d(dim, affine=False)
        self.head = nn.Linear(dim, num_classes)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``[B, C]`` of preprocessed images ``[B, 3, H, W]``."""
        # ELEVATER casts the features back to the input's dtype (float32) before the head.
        features = self.backbone.encode_image(images).float()
        return self.head(self.channel_bn(features))


def trainable_backbone(model: EncoderModel) -> EncoderModel:
    """A deep copy of ``model`` whose image-tower parameters (and only those) need gradients."""
    # Plain attributes such as a tokenizer or the image transform are not trained: shared, not
    # copied (copying a BPE tokenizer costs more than a tiny model's epoch).
    shared = {id(v): v for k, v in vars(model).items()
              if not k.startswith("_") and not isinstance(v, (nn.Module, Tensor))}
    backbone = copy.deepcopy(model, memo=shared)
    backbone.requires_grad_(False)
    # Plugins may freeze weights for evaluation; ELEVATER trains every image-tower parameter.
    for p in backbone.visual_parameters():
        p.requires_grad_(True)
    return backbone


class _Labelled(Dataset):
    """Decoded, transformed images of chosen source rows with their targets; decoding errors
    come back as data so a worker never dies on one file."""

    def __init__(self, source: ImageSource, rows: Tensor, targets: Tensor,
                 transform: Callable[[Any], Tensor]) -> None:
        self.source = source
        self.rows = rows.tolist()
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Tensor | None, Tensor, int, str | None]:
        row = self.rows[i]
        try:
            return self.transform(load_rgb(self.source, row)), self.targets[i], row, None
        except Exception as exc:  # any decoder error: PIL raises several kinds
            return None, self.targets[i], row, f"{type(exc).__name__}: {exc}"


def _collate(items: list[tuple[Tensor | None, Tensor, int, str | None]]) -> dict[str, Any]:
    ok = [(x, y, r) for x, y, r, err in items if err is None]
    return {
        "images": torch.stack([x for x, _, _ in ok]) if ok else None,
        "targets": torch.stack([y for _, y, _ in ok]) if ok else None,
        "rows": torch.tensor([r for _, _, r in ok], dtype=torch.long),
        "failed": [(r, err) for _, _, r, err in items if err is not None],
        "count": len(items),
    }


class _Runner:
    """Trains and evaluates classifiers for one fine-tuning job (shared data and settings)."""

    def __init__(self, model: EncoderModel, ctx: RunContext, cfg: FinetuneConfig,
                 source: ImageSource, eval_source: ImageSource, init: tuple[Tensor, Tensor],
                 multilabel: bool, metric: str, seed: int) -> None:
        self.model, self.ctx, self.cfg = model, ctx, cfg
        self.source, self.eval_source = source, eval_source
        self.init, self.multilabel, self.metric, self.seed = init, multilabel, metric, seed
        self.skipped: dict[ImageSource, set[int]] = {}

    def _loader(self, dataset: _Labelled, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle,
            # ELEVATER's create_dataloader seeds the shuffling generator with 0 for every run.
            generator=torch.Generator().manual_seed(0) if shuffle else None,
            num_workers=self.ctx.workers, collate_fn=_collate,
            pin_memory=self.ctx.device.type == "cuda",
            # One set of workers for all epochs of a run (the order is drawn in this process).
            persistent_workers=self.ctx.workers > 0,
        )

    def _images(self, batch: dict[str, Any], source: ImageSource) -> tuple[Tensor, Tensor] | None:
        for row, err in batch["failed"]:
            if not self.ctx.skip_corrupt:
                raise CorruptImageError(
                    f"cannot decode image {source.describe(row)} ({err}). Replace or remove "
                    "the file, or pass --skip-corrupt to skip and count such images.")
            self.skipped.setdefault(source, set()).add(row)
        if batch["images"] is None:
            return None
        device = self.ctx.device
        return (batch["images"].to(device, non_blocking=True),
                batch["targets"].to(device, non_blocking=True))

    def train(self, train: _Labelled, evaluation: _Labelled, lr: float, l2: float,
              epochs: int, keep_probs: bool) -> tuple[float, Tensor | None, Tensor, int,
                                                      list[float], int]:
        """One ELEVATER ``train_task``: returns (best eval score in percent, kept eval
        probabilities, their source rows, their 1-based epoch, mean loss per epoch, number
        of trainable parameters)."""
        ctx, cfg = self.ctx, self.cfg
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        # Dropout and other randomness of the forward pass: seeded per run, without
        # disturbing the caller's generators.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            classifier = FinetuneClassifier(trainable_backbone(self.model), *self.init)
            classifier = classifier.to(ctx.device)
            params = [p for p in classifier.parameters() if p.requires_grad]
            trainable = sum(p.numel() for p in params)
            optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=l2,
                                        nesterov=cfg.nesterov)
            scaler = torch.amp.GradScaler(ctx.device.type,
                                          enabled=ctx.precision == "amp_fp16")
            criterion: nn.Module = (nn.BCEWithLogitsLoss() if self.multilabel
                                    else nn.CrossEntropyLoss())
            loader = self._loader(train, cfg.batch_size, shuffle=True)
            eval_loader = self._loader(evaluation, ctx.batch_size, shuffle=False)
            eval_y = evaluation.targets.to(ctx.device)
            best, kept, kept_rows, kept_epoch = 0.0, None, torch.empty(0, dtype=torch.long), 0
            losses: list[float] = []
            label = f"finetune lr={lr:.0e} l2={l2:.2e}"
            with ctx.progress.bar(label, total=epochs * (len(train) + len(evaluation)),
                                  unit="images") as bar:
                for epoch in range(epochs):
                    classifier.train()
                    total, count = 0.0, 0
                    for batch in loader_batches(loader):
                        data = self._images(batch, self.source)
                        bar.advance(batch["count"])
                        if data is None or len(data[0]) == 1:
                            continue  # ELEVATER skips a one-image batch (BatchNorm needs two)
                        images, targets = data
                        optimizer.zero_grad(set_to_none=True)
                        with ctx.autocast():
                            logits = classifier(images)
                        loss = criterion(logits.float(), targets)
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                        total += float(loss.detach()) * len(images)
                        count += len(images)
                    losses.append(total / count if count else float("nan"))
                    probs, rows = self._evaluate(classifier, eval_loader, evaluation, bar)
                    positions = _positions(evaluation, rows)
                    score = _score(probs, eval_y[positions.to(ctx.device)], self.metric)
                    if score > best:
                        best = score
                        if keep_probs:
                            kept, kept_rows, kept_epoch = probs, rows, epoch + 1
            if keep_probs and kept is None:
                kept, kept_rows, kept_epoch = probs, rows, epochs
        del classifier, optimizer
        if ctx.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
        return best, kept, kept_rows, kept_epoch, losses, trainable

    def _evaluate(self, classifier: nn.Module, loader: DataLoader, dataset: _Labelled,
                  bar: Any) -> tuple[Tensor, Tensor]:
        classifier.eval()
        out, rows = [], []
        with torch.no_grad(), self.ctx.autocast():
            for batch in loader_batches(loader):
                data = self._images(batch, dataset.source)
                bar.advance(batch["count"])
                if data is None:
                    continue
                out.append(classifier(data[0]).float().softmax(dim=-1))
                rows.append(batch["rows"])
        if not out:
            raise ValueError("no image of the evaluation split could be decoded")
        return torch.cat(out), torch.cat(rows)


def _positions(dataset: _Labelled, rows: Tensor) -> Tensor:
    """Positions in ``dataset`` of source ``rows`` (all of them unless images were skipped)."""
    if len(rows) == len(dataset):
        return torch.arange(len(rows))
    where = {r: i for i, r in enumerate(dataset.rows)}
    return torch.tensor([where[int(r)] for r in rows], dtype=torch.long)


def _feature_dim(model: EncoderModel, data: _Labelled, ctx: RunContext) -> int:
    """Width of ``model``'s image features, from one decodable training image."""
    for i in range(len(data)):
        image, _, _, err = data[i]
        if err is None:
            with torch.no_grad(), ctx.autocast():
                return int(model.encode_image(image[None].to(ctx.device)).shape[-1])
    raise ValueError("no training image could be decoded")


def elevater_finetune(
    model: EncoderModel,
    train_source: ImageSource,
    train_rows: Tensor,
    train_y: Tensor,
    test_source: ImageSource,
    test_y: Tensor,
    num_classes: int,
    ctx: RunContext,
    *,
    metric: str | None = None,
    multilabel: bool = False,
    seed: int = 0,
    tune: bool = True,
    lr: float | None = None,
    l2: float | None = None,
    head_init: Tensor | None = None,
    config: FinetuneConfig | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``model``'s image tower with a linear head as ELEVATER does.

    ``train_rows`` are the rows of ``train_source`` to train on (ELEVATER's few-shot subset
    in its order, from :func:`~itra_bench.vision_benchmark.few_shot.sample_few_shot`), and
    ``train_y`` their targets (``[n]`` classes, or ``[n, C]`` 0/1 rows when ``multilabel``);
    ``test_y`` the targets of every row of ``test_source``. Images are decoded with the
    model's own ``image_transform`` through DataLoaders with ``ctx.workers`` workers, on
    ``ctx.device`` under ``ctx.autocast()``. ``head_init`` is an optional ``[C, D]`` initial
    head weight (zero-shot class embeddings; bias 0), else the head is drawn from ``seed``.

    With ``tune``, ``lr`` and ``l2`` are searched on ELEVATER's 20 % validation split of the
    training rows and the final run trains on all of them (``config.merge_train_val``);
    otherwise ``lr`` and ``l2`` must be given and the final run uses them on all training rows.
    ``model`` itself is never modified (every run trains a deep copy) and no feature cache is
    involved. Deterministic on CPU for given inputs and ``seed``.
    """
    cfg = config or FinetuneConfig()
    metric = metric or ("11point_mAP" if multilabel else "accuracy")
    if num_classes < 2:
        raise ValueError(f"fine-tuning a classifier needs at least 2 classes, got {num_classes}")
    if not tune and (lr is None or l2 is None):
        raise ValueError("tune=False needs both lr and l2")
    if model.image_transform is None:
        raise ValueError(f"{model.name} has no image transform")
    if len(train_rows) != len(train_y) or len(train_rows) == 0:
        raise ValueError(f"{len(train_rows)} training rows but {len(train_y)} targets")
    dtype = torch.float32 if multilabel else torch.long
    train_y, test_y = train_y.to(dtype), test_y.to(dtype)
    transform = model.image_transform
    everything = _Labelled(train_source, train_rows, train_y, transform)
    test = _Labelled(test_source, torch.arange(len(test_source)), test_y, transform)

    if head_init is not None:
        weight = head_init.detach().float().cpu()
        if weight.shape[0] != num_classes:
            raise ValueError(f"head_init has {weight.shape[0]} rows for {num_classes} classes")
        init = (weight, torch.zeros(num_classes))
    else:
        init = _linear_init(_feature_dim(model, everything, ctx), num_classes, seed)
    runner = _Runner(model, ctx, cfg, train_source, test_source, init, multilabel, metric, seed)

    fit_idx, val_idx = elevater_train_val_split(train_y, cfg.val_split)
    val_score, trace = None, []
    if tune:
        if len(fit_idx) == 0 or len(val_idx) == 0:
            raise ValueError(
                "cannot carve a validation split from the training set: it needs at least 2 "
                "images per class (sample 2 shots for 1-shot, as ELEVATER does)")
        fit = _Labelled(train_source, train_rows[fit_idx], train_y[fit_idx], transform)
        val = _Labelled(train_source, train_rows[val_idx], train_y[val_idx], transform)
        lr, l2, val_score, trace = _search(runner, fit, val)
    final = everything
    if not cfg.merge_train_val:
        # ELEVATER's 1-shot setting: the final run keeps the validation part out.
        final = _Labelled(train_source, train_rows[fit_idx], train_y[fit_idx], transform)
    epochs = cfg.epochs + cfg.extra_final_epochs
    best, probs, rows, epoch, losses, trainable = runner.train(
        final, test, float(lr), float(l2), epochs, keep_probs=True)
    assert probs is not None
    num_params = sum(p.numel() for p in model.parameters()) + num_classes * (init[0].shape[1] + 1)
    return FinetuneResult(
        probs_test=probs.cpu().numpy().astype(np.float32),
        test_indices=rows.cpu(),
        lr=float(lr), l2=float(l2), val_score=val_score, test_score=best / 100.0,
        epoch=epoch, epochs=epochs, num_train_images=len(final),
        num_trainable_params=trainable, num_params=num_params,
        train_loss=losses, trace=trace,
        skipped=[test_source.describe(r) for r in sorted(runner.skipped.get(test_source, ()))],
    )


def _search(runner: _Runner, fit: _Labelled, val: _Labelled
            ) -> tuple[float, float, float, list[tuple[float, float, float]]]:
    """ELEVATER's ``hyperparameter_sweep_lr`` / ``hyperparameter_sweep``, run by run; returns
    (lr, l2, validation score as a fraction, trace)."""
    cfg = runner.cfg
    grid: Sequence[float] = cfg.l2_grid
    cache: dict[tuple[float, int], float] = {}
    trace: list[tuple[float, float, float]] = []

    def score(lr: float, j: int) -> float:
        if (lr, j) not in cache:
            cache[(lr, j)] = runner.train(fit, val, lr, grid[j], cfg.epochs, keep_probs=False)[0]
        trace.append((lr, grid[j], cache[(lr, j)] / 100.0))
        return cache[(lr, j)]

    best_lr, best_l2, best_score = 0.0, 0.0, 0.0
    for lr in cfg.lr_grid:
        # peak_idx = -1 and score 0 to start with, strictly-better updates (see linear_probe).
        peak, peak_score = -1, 0.0
        for j in cfg.l2_coarse:
            if (s := score(lr, j)) > peak_score:
                peak, peak_score = j, s
        for span in cfg.l2_spans:
            left, right = max(peak - span, 0), min(peak + span, len(grid) - 1)
            for j in [k for k in (left, right) if k != peak]:
                if (s := score(lr, j)) > peak_score:
                    peak, peak_score = j, s
        if best_score < peak_score:
            best_lr, best_l2, best_score = lr, grid[peak], peak_score
    return best_lr, best_l2, best_score / 100.0, trace
