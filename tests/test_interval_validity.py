"""Every interval holds its own score: clustering scores, which resampling with replacement
inflates (a duplicated sample agrees with its copy), and every other outcome kind on varied
data, for single scores and for paired differences."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from itra_bench.bootstrap import Interval
from itra_bench.leaderboard import Leaderboard, score_with_interval
from itra_bench.outcome_kinds import KINDS
from itra_bench.sample_outcomes import SampleOutcomes, compare, interval

#: Few resamples: quick (scikit-learn's AMI is one call per resample), and percentile ends
#: nearer the extremes of the bootstrap distribution make holding the score harder.
RESAMPLES = 60


def _near_chance_clustering(n: int = 540, clusters: int = 10, signal: float = 0.0,
                            seed: int = 1) -> SampleOutcomes:
    """Cluster ids that follow the label for a share ``signal`` of the samples and are
    uniformly random otherwise (the digits test set has 540 images of 10 classes)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, n)
    cluster = np.where(rng.random(n) < signal, label % clusters, rng.integers(0, clusters, n))
    return SampleOutcomes("clustering", {"cluster": cluster, "label": label})


def test_clustering_interval_of_a_near_chance_clustering_holds_its_score():
    for signal in (0.0, 0.25):
        outcomes = _near_chance_clustering(signal=signal)
        for metric, resamples in (("nmi", 300), ("ami", RESAMPLES)):
            ci = interval(outcomes, metric, resamples=resamples)
            assert ci.low <= ci.estimate <= ci.high, (signal, metric, ci)


def test_clustering_difference_interval_holds_the_difference():
    # Two chance-level clusterings: resampling inflates the one with more clusters more, so
    # an uncorrected interval of B - A lies beside the observed difference.
    a = _near_chance_clustering(clusters=10, seed=2)
    b = SampleOutcomes("clustering", {"cluster": np.random.default_rng(3).integers(0, 3, 540),
                                      "label": a.arrays["label"]})
    for metric, resamples in (("nmi", 300), ("ami", RESAMPLES)):
        d = compare(a, b, metric, resamples=resamples)
        assert d.difference.low <= d.difference.estimate <= d.difference.high, (metric, d)


def test_a_recentred_interval_stays_within_the_metric_range():
    # Two clusters, two classes, no relation: moved down by the inflation, the lower end of
    # the NMI interval would fall below 0, which NMI never does.
    rng = np.random.default_rng(0)
    outcomes = SampleOutcomes("clustering", {"cluster": rng.integers(0, 2, 500),
                                             "label": rng.integers(0, 2, 500)})
    ci = interval(outcomes, "nmi", resamples=300)
    assert ci.low == 0 < ci.estimate < ci.high


def test_map_interval_of_chance_scores_holds_its_score():
    # 30 labels with few positives each, scored at random: a duplicated positive ranks right
    # beside its copy, which lifts the resampled 11-point mAP above the score.
    rng = np.random.default_rng(2)
    labels = (rng.random((3000, 30)) < 0.004).astype(int)
    labels[0] = 1
    outcomes = SampleOutcomes("multilabel", {"labels": labels,
                                             "scores": np.round(rng.random((3000, 30)), 6)})
    ci = interval(outcomes, "11point_mAP", resamples=100)
    assert ci.low <= ci.estimate <= ci.high, ci


# -- every kind, varied data ---------------------------------------------------------------

#: Evaluation sizes from a handful of samples to thousands, models from chance to perfect,
#: class and label frequencies from balanced to skewed (skew 4: the rarest class e^4 times
#: rarer than the commonest).
SIZES = (4, 11, 60, 400, 3000)
QUALITIES = (0.0, 0.05, 0.5, 0.95, 1.0)
SKEWS = (0.0, 1.0, 4.0)
#: Data of one case: the outcomes a model of a given quality has on it, and their metrics.
Case = tuple[Callable[[np.random.Generator, float], dict[str, np.ndarray]], list[str]]


def _priors(classes: int, skew: float) -> np.ndarray:
    p = np.exp(-skew * np.arange(classes) / max(1, classes - 1))
    return p / p.sum()


def _labels(rng: np.random.Generator, n: int, classes: int, skew: float) -> np.ndarray:
    return rng.choice(classes, n, p=_priors(classes, skew))


def _hits(rng: np.random.Generator, n: int, quality: float) -> np.ndarray:
    return rng.random(n) < quality


def _means(rng: np.random.Generator, n: int, skew: float) -> Case:
    def model(r: np.random.Generator, q: float) -> dict[str, np.ndarray]:
        soft = np.round(r.random(n) ** (1 + skew) * 3) / 3          # VQA-like 0, 1/3, 2/3, 1
        return {"hit": _hits(r, n, q).astype(float), "soft": np.where(_hits(r, n, q), 1, soft),
                "rr": np.where(_hits(r, n, q), 1.0, 1 / r.integers(1, 1000, n))}
    return model, ["hit", "soft", "rr"]


def _classification(rng: np.random.Generator, n: int, skew: float) -> Case:
    classes = int(rng.integers(2, 30))
    label = _labels(rng, n, classes, skew)

    def model(r: np.random.Generator, q: float) -> dict[str, np.ndarray]:
        return {"rank": np.where(_hits(r, n, q), 0, r.integers(0, classes, n)), "label": label}
    return model, ["acc1", "acc5", "mean_per_class_recall"]


def _retrieval(rng: np.random.Generator, n: int, skew: float) -> Case:
    owner = np.repeat(np.arange(n), rng.integers(1, 6, n))
    data = {"caption_image": owner, "ks": np.array([1, 5, 10])}

    def model(r: np.random.Generator, q: float) -> dict[str, np.ndarray]:
        return {**data, "text_rank": np.where(_hits(r, n, q), 0, r.integers(0, len(owner), n)),
                "image_rank": np.where(_hits(r, len(owner), q), 0,
                                       r.integers(0, n, len(owner)))}
    return model, ["mean_recall", "text_retrieval_recall@1", "image_retrieval_recall@5"]


def _correlation(rng: np.random.Generator, n: int, skew: float) -> Case:
    gold = np.round(rng.uniform(0, 5, n) ** (1 + skew) / 5 ** skew, 1)   # ties, as STS has

    def model(r: np.random.Generator, q: float) -> dict[str, np.ndarray]:
        pred = q * gold + (1 - q) * r.normal(0, 2, n)
        return {"gold": gold, "pred": np.exp(pred) if skew > 1 else pred}
    return model, ["spearman", "pearson"]


def _binary_scores(rng: np.random.Generator, n: int, skew: float) -> Case:
    label = _labels(rng, n, 2, skew)
    label[:2] = [0, 1]                                      # both classes: the AUC is defined

    def model(r: np.random.Generator, q: float) -> dict[str, np.ndarray]:
        return {"label": label, "score": np.round(q * label + r.normal(0, 1, n), 1)}
    return model, ["roc_auc"]


def _multilabel(rng: np.random.Generator, n: int, skew: float) -> Case:
    classes = int(rng.integers(1, 7))
    labels = (rng.random((n, classes)) < 0.5 * _priors(classes, skew)).astype(int)
    labels[np.arange(classes) % n, np.arange(classes)] = 1  # a positive for every label

    def model(r: np.random.Generator, q: float) -> dict[str, np.ndarray]:
        scores = np.round(q * labels + (1 - q) * r.random(labels.shape), 3)
        return {"labels": labels, "scores": scores}
    return model, ["11point_mAP"]


def _clustering(rng: np.random.Generator, n: int, skew: float) -> Case:
    classes, clusters = int(rng.integers(2, 12)), int(rng.integers(2, 12))
    label = _labels(rng, n, classes, skew)

    def model(r: np.random.Generator, q: float) -> dict[str, np.ndarray]:
        return {"label": label,
                "cluster": np.where(_hits(r, n, q), label % clusters, r.integers(0, clusters, n))}
    # scikit-learn's AMI is one call per resample: kept to the smaller sizes.
    return model, ["nmi", "ami"] if n <= 60 else ["nmi"]


CASES = {"means": _means, "classification": _classification, "retrieval": _retrieval,
         "correlation": _correlation, "binary_scores": _binary_scores,
         "multilabel": _multilabel, "clustering": _clustering}
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)


def _case(kind: str, data: st.DataObject) -> tuple[np.random.Generator, Case]:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    n, skew = data.draw(st.sampled_from(SIZES), "n"), data.draw(st.sampled_from(SKEWS), "skew")
    return rng, CASES[kind](rng, n, skew)


def _holds(ci: Interval) -> bool:
    """The interval holds its estimate (an undefined score, such as a correlation with a
    constant prediction, has nothing to hold)."""
    return np.isnan(ci.estimate) or ci.low <= ci.estimate <= ci.high


def test_the_cases_cover_every_kind():
    assert sorted(CASES) == sorted(KINDS)


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # undefined correlations
@pytest.mark.parametrize("kind", sorted(CASES))
@PROPERTY
@given(data=st.data())
def test_every_interval_holds_its_score(kind, data):
    rng, (model, metrics) = _case(kind, data)
    outcomes = SampleOutcomes(kind, model(rng, data.draw(st.sampled_from(QUALITIES), "q")))
    for metric in metrics:
        ci = interval(outcomes, metric, resamples=RESAMPLES, seed=int(rng.integers(1000)))
        assert _holds(ci), (metric, ci)
        # Moved ends are cut back to the metric's range (NMI is never below 0), or to the
        # score where rounding put it outside (NMI 1 + 2e-16).
        low, high = KINDS[kind].recentred.get(metric, (-np.inf, np.inf))
        assert min(low, ci.estimate) <= ci.low and ci.high <= max(high, ci.estimate), ci


@pytest.mark.parametrize("kind", sorted(CASES))
@PROPERTY
@given(data=st.data())
def test_every_paired_difference_holds_the_difference(kind, data):
    rng, (model, metrics) = _case(kind, data)
    a, b = (SampleOutcomes(kind, model(rng, data.draw(st.sampled_from(QUALITIES), "q")))
            for _ in range(2))
    for metric in metrics:
        d = compare(a, b, metric, resamples=RESAMPLES, seed=int(rng.integers(1000)))
        assert _holds(d.difference), (metric, d)


# -- how intervals are printed -------------------------------------------------------------

def test_asymmetric_intervals_print_as_low_high_never_plus_minus():
    assert score_with_interval(0.9704, 0.9574, 0.9834) == "97.04 ± 1.30"
    # Half-widths that differ only beyond the printed digits still read as symmetric.
    assert score_with_interval(0.9704, 0.957401, 0.983399) == "97.04 ± 1.30"
    assert score_with_interval(0.1313, 0.1020, 0.1590) == "13.13 [10.20, 15.90]"
    assert score_with_interval(1.0, 1.0, 1.0) == "100.00 ± 0.00"
    board = Leaderboard(["random"], ["digits-clustering"], [],
                        {("random", "digits-clustering"): 0.1313}, {}, {},
                        {("random", "digits-clustering"): (0.1020, 0.1590)})
    assert board.score_text("random", "digits-clustering") == "13.13 [10.20, 15.90]"
    assert "13.13 [10.20, 15.90]" in board.to_markdown()
    assert "±" not in board.rows("markdown")[0]["digits-clustering"]
    # Scripts keep numbers.
    assert board.rows("json")[0]["digits-clustering/low"] == pytest.approx(10.20)
    # The terminal shows brackets as written, in cells and in the title (no rich markup).
    console = Console(file=io.StringIO(), width=200)
    board.print(console)
    out = console.file.getvalue()
    assert "13.13 [10.20, 15.90]" in out and "else [low," in out, out
