"""Similarity protocols of sentence and word embeddings: correlation with human scores (STS,
word similarity) and triplet accuracy (Wikipedia sections).

Definitions:

- the system score of a pair is the cosine similarity of its two embeddings, computed in
  float64; a zero vector has similarity 0 with everything (as SentEval's ``nan_to_num`` and
  sentence-transformers' ``pairwise_cos_sim`` give);
- ``spearman`` and ``pearson`` are scipy's ``spearmanr`` and ``pearsonr`` of the system scores
  against the gold scores (ties get average ranks);
- over several files (STS12-16), ``all`` pools the pairs of every file into one correlation
  (SimCSE's SentEval ``results['all'][...]['all']``, the number SimCSE and later papers
  report), ``mean`` is the plain average of the per-file correlations and ``wmean`` their
  average weighted by the files' numbers of pairs (both from SentEval's ``sts.py``);
- triplet accuracy is the share of triplets whose anchor is strictly more similar (cosine) to
  the positive than to the negative, as sentence-transformers' ``TripletEvaluator``
  (``cosine_accuracy``, margin 0): a tie counts as wrong. Results name it ``acc1``: top-1
  accuracy over the two candidates.

Per-sample outcomes (:mod:`itra_bench.sample_outcomes`): a correlation carries the system and
gold score of each pair it used (kind ``correlation``; for ``sts_correlations`` the pairs of
every file, pooled in file order, which recompute ``spearman`` and ``pearson``), a triplet
accuracy the 0/1 outcome of each triplet (kind ``means``, array ``acc1``). A correlation
that is NaN (constant scores) carries none: it has nothing to resample.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from itra_bench.sample_outcomes import Metrics, SampleOutcomes


def unique_texts(texts: Sequence[str]) -> tuple[list[str], Tensor]:
    """The distinct strings of ``texts`` (first-seen order) and, for each input, its row there.

    Sentences recur across STS pairs and words across word-similarity pairs; each distinct
    string is then embedded once and ``features[index]`` gives one row per input.
    """
    rows: dict[str, int] = {}
    index = [rows.setdefault(t, len(rows)) for t in texts]
    return list(rows), torch.tensor(index, dtype=torch.long)


def _check_pairs(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{name_a} and {name_b} must be [count, dim], got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError(f"{name_a} or {name_b} contain NaN or infinite values")


def paired_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of row ``i`` of ``a`` with row ``i`` of ``b``: ``[N]`` float64."""
    _check_pairs("first embeddings", a, "second embeddings", b)
    a64 = F.normalize(a.double(), dim=1)
    b64 = F.normalize(b.double(), dim=1)
    return (a64 * b64).sum(dim=1)


@dataclass(frozen=True)
class Correlation:
    """Spearman and Pearson correlation of system scores with gold scores over ``n`` pairs."""

    spearman: float
    pearson: float
    n: int
    #: The ``pred`` (system) and ``gold`` score of each pair; None when a correlation is NaN.
    samples: SampleOutcomes | None = field(default=None, repr=False, compare=False)


def correlation(system: Tensor | Sequence[float], gold: Tensor | Sequence[float]
                ) -> Correlation:
    """Spearman and Pearson correlation of ``system`` scores against ``gold`` scores.

    Needs at least 2 pairs. A constant input (e.g. a model giving every pair the same
    similarity) has no correlation: both values are NaN, as scipy returns.
    """
    sys_scores = np.asarray(torch.as_tensor(system, dtype=torch.float64).cpu(), dtype=np.float64)
    gold_scores = np.asarray(torch.as_tensor(gold, dtype=torch.float64).cpu(), dtype=np.float64)
    if sys_scores.shape != gold_scores.shape or sys_scores.ndim != 1:
        raise ValueError(f"system and gold scores must be two vectors of the same length, got "
                         f"shapes {sys_scores.shape} and {gold_scores.shape}")
    if len(sys_scores) < 2:
        raise ValueError(f"a correlation needs at least 2 scored pairs, got {len(sys_scores)}")
    if not np.isfinite(gold_scores).all():
        raise ValueError("gold scores contain NaN or infinite values")
    # scipy.stats costs a second to import: only the tasks that correlate pay it.
    from scipy.stats import ConstantInputWarning, pearsonr, spearmanr

    with warnings.catch_warnings():
        # Constant input: scipy warns and returns NaN; NaN is the documented answer.
        warnings.simplefilter("ignore", ConstantInputWarning)
        rho = float(spearmanr(sys_scores, gold_scores)[0])
        r = float(pearsonr(sys_scores, gold_scores)[0])
    samples = (SampleOutcomes("correlation", {"pred": sys_scores, "gold": gold_scores})
               if np.isfinite(rho) and np.isfinite(r) else None)
    return Correlation(spearman=rho, pearson=r, n=len(sys_scores), samples=samples)


def sts_correlations(system: Sequence[Tensor], gold: Sequence[Tensor]) -> Metrics:
    """Correlations over one or several files of scored pairs (STS12-16, STS-B, SICK-R).

    ``system[k]`` and ``gold[k]`` are the cosine and gold scores of file ``k``. Returns
    ``spearman`` and ``pearson`` over all pairs pooled (SimCSE's ``all``), and
    ``spearman_wmean``, ``pearson_wmean``, ``spearman_mean``, ``pearson_mean`` over the
    per-file correlations (SentEval's ``wmean`` and ``mean``). With one file all three agree.
    The metrics carry the pooled pairs' outcomes, which recompute ``spearman`` and
    ``pearson`` (the per-file aggregates are not resampled).
    """
    if not system or len(system) != len(gold):
        raise ValueError(f"need one gold vector per system vector, got {len(system)} and "
                         f"{len(gold)}")
    per_file = [correlation(s, g) for s, g in zip(system, gold, strict=True)]
    pooled = correlation(torch.cat([torch.as_tensor(s, dtype=torch.float64) for s in system]),
                         torch.cat([torch.as_tensor(g, dtype=torch.float64) for g in gold]))
    weights = np.array([c.n for c in per_file], dtype=np.float64)
    rho = np.array([c.spearman for c in per_file])
    r = np.array([c.pearson for c in per_file])
    return Metrics({
        "spearman": pooled.spearman,
        "pearson": pooled.pearson,
        "spearman_wmean": float(np.average(rho, weights=weights)),
        "pearson_wmean": float(np.average(r, weights=weights)),
        "spearman_mean": float(np.mean(rho)),
        "pearson_mean": float(np.mean(r)),
    }, pooled.samples)


@dataclass(frozen=True)
class TripletScores:
    """Triplet accuracy and its parts: ``correct`` of ``n`` triplets, ``ties`` among the
    wrong ones (anchor exactly as similar to both)."""

    accuracy: float
    correct: int
    ties: int
    n: int
    #: 1.0 for each triplet counted correct, else 0.0 (array ``acc1``, kind ``means``).
    samples: SampleOutcomes | None = field(default=None, repr=False, compare=False)


def triplet_accuracy(anchor: Tensor, positive: Tensor, negative: Tensor) -> TripletScores:
    """Share of triplets with ``cos(anchor, positive) > cos(anchor, negative)`` (strictly)."""
    _check_pairs("anchor embeddings", anchor, "positive embeddings", positive)
    _check_pairs("anchor embeddings", anchor, "negative embeddings", negative)
    if anchor.shape[0] == 0:
        raise ValueError("triplet accuracy needs at least one triplet")
    pos = paired_cosine(anchor, positive)
    neg = paired_cosine(anchor, negative)
    hits = (pos > neg).cpu().numpy().astype(np.float64)
    correct = int(hits.sum())
    n = anchor.shape[0]
    return TripletScores(accuracy=correct / n, correct=correct, ties=int((pos == neg).sum()),
                         n=n, samples=SampleOutcomes("means", {"acc1": hits}))
