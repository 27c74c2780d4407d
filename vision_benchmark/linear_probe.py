"""ELEVATER's linear-probe protocol on cached image features.

What ELEVATER does (``vision_benchmark/commands/linear_probe.py`` ->
``full_model_finetune`` in ``vision_benchmark/evaluation/full_model_finetune.py``, with the
defaults of ``vision_benchmark/config/default.py`` and the ``TRAIN`` block of its model
configs, e.g. ``vision_benchmark/resources/model/react_vitb32_CLIP.yaml``):

- **Classifier.** ``BatchNorm1d(D, affine=False)`` on the frozen features, then
  ``Linear(D, C)``, times ``exp(logit_scale) = 1`` (``LOGIT_SCALE_INIT='none'``). Loss:
  ``CrossEntropyLoss``; ``BCEWithLogitsLoss`` for the multilabel datasets
  (``voc-2007-classification``, ``chestx-ray8``). Scores for the metric are always
  ``softmax(logits)`` over classes, the multilabel datasets included.
- **Optimiser.** SGD, momentum 0.9, no Nesterov (model configs set ``NESTEROV: false``),
  weight decay ``l2`` on the weight and the bias (``WITHOUT_WD_LIST`` is empty), constant
  learning rate (``TRAIN.SCHEDULE = []``; ``adjust_learning_rate`` ignores ``LR_SCHEDULER``).
  Mini-batches of 64 from ``DataLoader(shuffle=True)`` with a generator seeded 0 for every
  run (``create_dataloader`` in ``feature.py``); a batch of one sample is skipped.
- **Epochs.** 10 per search run (``END_EPOCH: 10``); the final run trains
  ``10 + EXTRA_FINAL_TRAIN_EPOCH = 50`` epochs. A run's score is its *best* epoch's metric
  on the evaluation split (``SEARCH_RESULT_ON_LAST_EPOCH = False``).
- **Search** (``hyperparameter_sweep_lr`` / ``hyperparameter_sweep``): for each learning rate
  in ``logspace(-6, -1, 6)``, ``l2`` is searched on the 97-point grid
  ``logspace(-6, 6, 97)``: first its 7 points ``1e-6, 1e-4, ..., 1e6``, then around the best
  index with spans 8, 4, 2, 1 (the index ``span`` to each side, clamped to the grid), keeping
  a candidate only when its score is strictly higher. The learning rate with the strictly
  highest score wins (ties keep the smaller rate and the smaller ``l2``).
- **Validation.** 20% of the (few-shot) training set, carved by
  :func:`~itra_bench.vision_benchmark.few_shot.elevater_train_val_split`. The final run
  trains on train + validation (``MERGE_TRAIN_VAL_FINAL_RUN``; not for 1-shot, which ELEVATER
  runs as 2-shot without merging: see :func:`elevater_probe_shots`).
- **Test predictions.** The final run evaluates the test split after every epoch and keeps
  the probabilities of the epoch with the best *test* score (ELEVATER selects the epoch on
  the test set). We do the same when ``test_y`` is given, and keep the last epoch otherwise.

Deviations, all documented where they occur: the classifier is initialised from ``seed`` with
``nn.Linear``'s distribution, identically for every candidate (ELEVATER draws it from the
global torch generator, so it differs between runs and cannot be reproduced); the candidates
of one search round are trained together as a batch of independent heads, with hand-written
gradients (the same updates as autograd + ``torch.optim.SGD``, up to float rounding); a
candidate already trained is not trained again (ELEVATER would retrain it from a different
random initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from itra_bench.progress import Bar, ProgressReporter
from itra_bench.vision_benchmark.few_shot import elevater_train_val_split
from itra_bench.vision_benchmark.metrics import elevater_metric

#: Learning rates ELEVATER tries (``hyperparameter_sweep_lr``): ``numpy.logspace(-6, -1, 6)``.
ELEVATER_LR_GRID: tuple[float, ...] = tuple(np.logspace(-6, -1, num=6).tolist())
#: The ``l2`` (weight decay) grid ELEVATER refines on (``hyperparameter_sweep``):
#: ``numpy.logspace(-6, 6, 97)``, i.e. 8 points per decade.
ELEVATER_L2_GRID: tuple[float, ...] = tuple(np.logspace(-6, 6, num=97).tolist())
#: Indices into :data:`ELEVATER_L2_GRID` of the first, coarse round: ``1e-6, 1e-4, ..., 1e6``.
ELEVATER_L2_COARSE: tuple[int, ...] = (0, 16, 32, 48, 64, 80, 96)
#: The spans of the refinement rounds around the current best index.
ELEVATER_L2_SPANS: tuple[int, ...] = (8, 4, 2, 1)

_BN_EPS = 1e-5
_BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class ElevaterProbeConfig:
    """Training settings of ELEVATER's linear probe (defaults = ELEVATER's model configs)."""

    epochs: int = 10
    extra_final_epochs: int = 40
    batch_size: int = 64
    momentum: float = 0.9
    nesterov: bool = False
    val_split: float = 0.2
    merge_train_val: bool = True
    lr_grid: tuple[float, ...] = ELEVATER_LR_GRID
    l2_grid: tuple[float, ...] = ELEVATER_L2_GRID
    l2_coarse: tuple[int, ...] = ELEVATER_L2_COARSE
    l2_spans: tuple[int, ...] = ELEVATER_L2_SPANS


@dataclass
class ProbeResult:
    """Outcome of :func:`elevater_linear_probe`.

    ``probs_test`` is ``[N_test, C]`` float32 softmax probabilities of the final classifier;
    ``lr`` and ``l2`` the hyperparameters it was trained with; ``val_score`` the validation
    metric (a fraction) of the chosen pair during the search (``None`` without search);
    ``test_score`` the test metric of ``probs_test`` when test labels were given;
    ``epoch`` the 1-based final-run epoch ``probs_test`` comes from; ``trace`` every
    ``(lr, l2, val_score)`` the search evaluated, in order.
    """

    probs_test: np.ndarray
    lr: float
    l2: float
    val_score: float | None
    test_score: float | None = None
    epoch: int = 0
    trace: list[tuple[float, float, float]] = field(default_factory=list)


def elevater_probe_shots(shots: int) -> tuple[int, bool]:
    """The shots ELEVATER samples for a ``shots``-shot linear probe, and whether it merges.

    ELEVATER's ``linear_probe`` command samples 2 images per class for the 1-shot setting (one
    for training, one for validation) and then trains the final classifier without merging
    the validation image back. Returns ``(shots_to_sample, merge_train_val)``.
    """
    if shots == 1:
        return 2, False
    return shots, True


class _Heads:
    """``M`` independent ``BatchNorm1d(affine=False) -> Linear`` heads trained by SGD at once.

    The weights of all heads are one ``[D, M, C]`` tensor, so every forward and backward pass
    is a single 2-D matrix product (batched 3-D products of small matrices are much slower
    on CPU).
    """

    def __init__(
        self,
        init: tuple[Tensor, Tensor],
        lrs: Tensor,
        wds: Tensor,
        momentum: float,
        nesterov: bool,
    ) -> None:
        count = len(lrs)
        self.weight = init[0].T.unsqueeze(1).repeat(1, count, 1).contiguous()  # [D, M, C]
        self.bias = init[1].unsqueeze(0).repeat(count, 1).contiguous()  # [M, C]
        self.lrs = lrs[None, :, None]
        self.wds = wds[None, :, None]
        self.momentum = momentum
        self.nesterov = nesterov
        self.buf_weight: Tensor | None = None
        self.buf_bias: Tensor | None = None
        dim = self.weight.shape[0]
        self.running_mean = torch.zeros(dim, device=lrs.device)
        self.running_var = torch.ones(dim, device=lrs.device)

    @property
    def count(self) -> int:
        return self.weight.shape[1]

    def step(self, xb: Tensor, yb: Tensor, multilabel: bool) -> None:
        batch, dim = xb.shape
        count, classes = self.bias.shape
        mean = xb.mean(dim=0)
        xn = (xb - mean) / torch.sqrt(xb.var(dim=0, unbiased=False) + _BN_EPS)
        # BatchNorm1d's running variance is updated with the unbiased batch variance.
        self.running_mean.mul_(1 - _BN_MOMENTUM).add_(_BN_MOMENTUM * mean)
        self.running_var.mul_(1 - _BN_MOMENTUM).add_(_BN_MOMENTUM * xb.var(dim=0, unbiased=True))
        logits = (xn @ self.weight.view(dim, -1)).view(batch, count, classes) + self.bias
        if multilabel:
            # d/dlogits of BCEWithLogitsLoss (mean over B x C elements).
            grad = (torch.sigmoid(logits) - yb[:, None, :]) / (batch * classes)
        else:
            # d/dlogits of CrossEntropyLoss (mean over the batch).
            grad = logits.softmax(dim=-1)
            grad[torch.arange(batch, device=xb.device), :, yb] -= 1.0
            grad /= batch
        grad_weight = (xn.T @ grad.view(batch, -1)).view(dim, count, classes)
        grad_weight += self.wds * self.weight
        grad_bias = grad.sum(dim=0) + self.wds[0] * self.bias
        # torch.optim.SGD: the first step's buffer is the gradient itself (no dampening).
        if self.buf_weight is None or self.buf_bias is None:
            self.buf_weight, self.buf_bias = grad_weight.clone(), grad_bias.clone()
        else:
            self.buf_weight.mul_(self.momentum).add_(grad_weight)
            self.buf_bias.mul_(self.momentum).add_(grad_bias)
        if self.nesterov:
            step_weight = grad_weight + self.momentum * self.buf_weight
            step_bias = grad_bias + self.momentum * self.buf_bias
        else:
            step_weight, step_bias = self.buf_weight, self.buf_bias
        self.weight -= self.lrs * step_weight
        self.bias -= self.lrs[0] * step_bias

    def probs(self, x: Tensor, head: int) -> Tensor:
        xn = (x - self.running_mean) / torch.sqrt(self.running_var + _BN_EPS)
        return (xn @ self.weight[:, head, :] + self.bias[head]).softmax(dim=-1)


def _score(probs: Tensor, targets: Tensor, metric: str) -> float:
    """``100 * metric``, or 0 where ELEVATER's ``try/except`` around the metric would fire."""
    if metric == "accuracy" and targets.ndim == 1:
        # numpy argmax semantics (ELEVATER's evaluator): a NaN wins, first index on ties.
        predicted = probs.nan_to_num(nan=2.0).argmax(dim=-1)
        return 100.0 * float((predicted == targets).float().mean())
    try:
        if not torch.isfinite(probs).all() and metric in ("11point_mAP", "roc_auc"):
            return 0.0  # scikit-learn raises on NaN scores
        return 100.0 * elevater_metric(metric, probs.cpu().numpy(), targets.cpu().numpy())
    except ValueError:
        return 0.0


def _train_heads(
    x: Tensor,
    y: Tensor,
    eval_x: Tensor,
    eval_y: Tensor | None,
    lrs: Sequence[float],
    wds: Sequence[float],
    epochs: int,
    cfg: ElevaterProbeConfig,
    init: tuple[Tensor, Tensor],
    multilabel: bool,
    metric: str,
    keep_probs: bool,
    bar: Bar,
) -> tuple[list[float], Tensor | None, int]:
    """Train one head per ``(lr, wd)`` pair; best-epoch score of each on ``eval``; ``bar``
    advances by one per epoch.

    With ``keep_probs`` (a single head), also returns the evaluation probabilities of its best
    epoch (strictly better than all earlier ones, as ELEVATER keeps ``best_logits``) or of the
    last epoch when ``eval_y`` is None, and that 1-based epoch.
    """
    device = x.device
    heads = _Heads(
        init,
        torch.tensor(list(lrs), dtype=torch.float32, device=device),
        torch.tensor(list(wds), dtype=torch.float32, device=device),
        cfg.momentum,
        cfg.nesterov,
    )
    # ELEVATER's create_dataloader: shuffle=True with a torch.Generator seeded 0 for every run;
    # iterating a real DataLoader over positions reproduces its batch order exactly.
    loader = torch.utils.data.DataLoader(
        range(x.shape[0]),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    best = [0.0] * heads.count
    kept, kept_epoch = None, 0
    for epoch in range(epochs):
        for positions in loader:
            if len(positions) == 1:
                continue  # ELEVATER skips a one-sample batch (BatchNorm needs two)
            positions = positions.to(device)
            heads.step(x[positions], y[positions], multilabel)
        bar.advance()
        for head in range(len(best)):
            probs = heads.probs(eval_x, head)
            if eval_y is None:
                kept, kept_epoch = probs, epoch + 1
                continue
            score = _score(probs, eval_y, metric)
            if score > best[head]:
                best[head] = score
                if keep_probs:
                    kept, kept_epoch = probs, epoch + 1
    if keep_probs and kept is None:
        kept, kept_epoch = heads.probs(eval_x, 0), epochs
    return best, kept, kept_epoch


def _linear_init(dim: int, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    # nn.Linear's default initialisation: U(-1/sqrt(D), 1/sqrt(D)) for weight and bias.
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(dim)
    weight = (torch.rand(num_classes, dim, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(num_classes, generator=generator) * 2 - 1) * bound
    return weight, bias


def _check_inputs(
    name: str, x: Tensor, y: Tensor | None, num_classes: int, multilabel: bool
) -> None:
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} features must be a non-empty [N, D], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} features contain NaN or infinite values")
    if y is None:
        return
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{name} has {x.shape[0]} feature rows but {y.shape[0]} labels")
    if multilabel:
        if y.ndim != 2 or y.shape[1] != num_classes:
            raise ValueError(f"{name} multilabel targets must be [N, {num_classes}] 0/1 rows")
    elif y.ndim != 1 or y.dtype.is_floating_point:
        raise ValueError(f"{name} labels must be [N] integer classes, got {tuple(y.shape)}")
    elif int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"{name} labels must lie in [0, {num_classes})")


def elevater_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    num_classes: int,
    *,
    test_y: Tensor | None = None,
    val_x: Tensor | None = None,
    val_y: Tensor | None = None,
    multilabel: bool = False,
    metric: str | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    tune: bool = True,
    lr: float | None = None,
    l2: float | None = None,
    config: ElevaterProbeConfig | None = None,
    progress: ProgressReporter | None = None,
) -> ProbeResult:
    """Run ELEVATER's linear probe (search, then final training) on cached features.

    ``train_x`` ``[N, D]`` with ``train_y`` (``[N]`` classes, or ``[N, C]`` 0/1 rows when
    ``multilabel``) is the (few-shot) training set in ELEVATER's order (the order
    :func:`~itra_bench.vision_benchmark.few_shot.sample_few_shot` returns); ``test_x`` the
    test features. ``metric`` is the dataset's ELEVATER metric (default ``accuracy``, or
    ``11point_mAP`` when ``multilabel``); it scores validation runs and, with ``test_y``,
    picks the final epoch on the test set as ELEVATER does (see the module docstring).

    With ``tune`` the learning rate and ``l2`` are searched as ELEVATER does, on ``val_x,
    val_y`` when given, else on ELEVATER's 20% split of the training set; the final classifier
    is trained on train + validation (``config.merge_train_val``) with the chosen pair. With
    ``tune=False``, ``lr`` and ``l2`` must be given and the final classifier is trained on the
    training set (plus ``val_x, val_y`` if given and merging) with them directly.
    Deterministic for given inputs and ``seed``; training runs on ``device`` in float32.
    ``progress`` (the run's) shows the epochs trained, of the search's rounds and the final run.
    """
    cfg = config or ElevaterProbeConfig()
    metric = metric or ("11point_mAP" if multilabel else "accuracy")
    if num_classes < 2:
        raise ValueError(f"a linear probe needs at least 2 classes, got {num_classes}")
    if (val_x is None) != (val_y is None):
        raise ValueError("give both val_x and val_y, or neither")
    if not tune and (lr is None or l2 is None):
        raise ValueError("tune=False needs both lr and l2")
    _check_inputs("training", train_x, train_y, num_classes, multilabel)
    _check_inputs("test", test_x, test_y, num_classes, multilabel)
    if val_x is not None:
        _check_inputs("validation", val_x, val_y, num_classes, multilabel)
    dim = train_x.shape[1]
    if test_x.shape[1] != dim or (val_x is not None and val_x.shape[1] != dim):
        raise ValueError("training, validation and test features must have the same dimension")

    def prepare(x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        x = x.to(device=device, dtype=torch.float32)
        if y is not None:
            y = y.to(device=device, dtype=torch.float32 if multilabel else torch.long)
        return x, y

    train_x, train_y = prepare(train_x, train_y)
    test_x, test_y = prepare(test_x, test_y)
    if val_x is not None:
        val_x, val_y = prepare(val_x, val_y)
        fit_x, fit_y = train_x, train_y
        full_x, full_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    else:
        full_x, full_y = train_x, train_y
        fit_idx, val_idx = elevater_train_val_split(train_y.cpu(), cfg.val_split)
        if tune and (len(fit_idx) == 0 or len(val_idx) == 0):
            raise ValueError(
                "cannot carve a validation split from the training set: it needs at least 2 "
                "samples per class (sample 2 shots for 1-shot, as ELEVATER does)"
            )
        fit_idx, val_idx = fit_idx.to(device), val_idx.to(device)
        fit_x, fit_y = train_x[fit_idx], train_y[fit_idx]
        val_x, val_y = train_x[val_idx], train_y[val_idx]
    init = tuple(t.to(device) for t in _linear_init(dim, num_classes, seed))

    val_score = None
    trace: list[tuple[float, float, float]] = []
    final_epochs = cfg.epochs + cfg.extra_final_epochs
    # Every search round (the coarse one, one per span) trains its candidates for cfg.epochs.
    search_epochs = (1 + len(cfg.l2_spans)) * cfg.epochs if tune else 0
    total = search_epochs + final_epochs
    progress = progress or ProgressReporter(enabled=False)
    with progress.bar("linear probe (ELEVATER): search, final training", total=total,
                      unit="epochs") as bar:
        if tune:
            lr, l2, val_score, trace = _search(
                fit_x, fit_y, val_x, val_y, cfg, init, multilabel, metric, bar
            )
        # ELEVATER's final run: train + validation when merging, else the training part only.
        final_x, final_y = (full_x, full_y) if cfg.merge_train_val else (fit_x, fit_y)
        scores, probs, epoch = _train_heads(
            final_x,
            final_y,
            test_x,
            test_y,
            [lr],
            [l2],
            final_epochs,
            cfg,
            init,
            multilabel,
            metric,
            keep_probs=True,
            bar=bar,
        )
    test_score = None if test_y is None else _score(probs, test_y, metric) / 100.0
    return ProbeResult(
        probs_test=probs.cpu().numpy().astype(np.float32),
        lr=float(lr),
        l2=float(l2),
        val_score=val_score,
        test_score=test_score,
        epoch=epoch,
        trace=trace,
    )


def _search(
    x: Tensor,
    y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    cfg: ElevaterProbeConfig,
    init: tuple[Tensor, Tensor],
    multilabel: bool,
    metric: str,
    bar: Bar,
) -> tuple[float, float, float, list[tuple[float, float, float]]]:
    """ELEVATER's learning-rate x ``l2`` search; returns (lr, l2, val score, trace). ``bar``
    advances by ``cfg.epochs`` per round.

    Every round trains the pending candidates of all learning rates together; the per-rate
    bookkeeping then replays ELEVATER's sequential loop (strictly-better updates, in order).
    """
    grid = list(cfg.l2_grid)
    cache: dict[tuple[int, int], float] = {}
    trace: list[tuple[float, float, float]] = []

    def evaluate(pairs: list[tuple[int, int]]) -> None:
        todo = sorted({p for p in pairs if p not in cache})
        if todo:
            scores, _, _ = _train_heads(
                x,
                y,
                val_x,
                val_y,
                [cfg.lr_grid[i] for i, _ in todo],
                [grid[j] for _, j in todo],
                cfg.epochs,
                cfg,
                init,
                multilabel,
                metric,
                keep_probs=False,
                bar=bar,
            )
            cache.update(zip(todo, scores, strict=True))
        else:
            bar.advance(cfg.epochs)  # every candidate of the round was trained before
        for i, j in pairs:
            trace.append((cfg.lr_grid[i], grid[j], cache[(i, j)] / 100.0))

    rates = range(len(cfg.lr_grid))
    evaluate([(i, j) for i in rates for j in cfg.l2_coarse])
    # ELEVATER starts from peak_idx = -1 and score 0: with no positive score the "peak" is
    # the last grid point, and the refinement spans are taken around index -1.
    peak = {i: -1 for i in rates}
    peak_score = {i: 0.0 for i in rates}
    for i in rates:
        for j in cfg.l2_coarse:
            if cache[(i, j)] > peak_score[i]:
                peak[i], peak_score[i] = j, cache[(i, j)]
    for span in cfg.l2_spans:
        candidates: dict[int, list[int]] = {}
        for i in rates:
            left, right = max(peak[i] - span, 0), min(peak[i] + span, len(grid) - 1)
            candidates[i] = [j for j in (left, right) if j != peak[i]]
        evaluate([(i, j) for i in rates for j in candidates[i]])
        for i in rates:
            for j in candidates[i]:
                if cache[(i, j)] > peak_score[i]:
                    peak[i], peak_score[i] = j, cache[(i, j)]
    # hyperparameter_sweep_lr: best_score starts at 0 and needs a strict improvement; with no
    # positive score anywhere ELEVATER ends with lr = 0 and l2 = 0, reproduced here.
    best_lr, best_l2, best_score = 0.0, 0.0, 0.0
    for i in rates:
        if best_score < peak_score[i]:
            best_lr, best_l2, best_score = cfg.lr_grid[i], grid[peak[i]], peak_score[i]
    return best_lr, best_l2, best_score / 100.0, trace
