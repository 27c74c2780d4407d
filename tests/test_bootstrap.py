"""Bootstrap intervals against scipy.stats.bootstrap and the Wilson interval, the paired
permutation test on cases with a known answer, and Holm's procedure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from itra_bench.bootstrap import (
    bootstrap_interval,
    holm,
    mean,
    paired_difference,
    pearson,
    spearman,
)


def _outcomes(n: int = 2000, p: float = 0.7, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(np.float64)


def test_interval_of_a_mean_of_outcomes_matches_scipy_and_wilson():
    correct = _outcomes()
    ours = bootstrap_interval(mean, correct, resamples=4000, seed=1)
    ref = stats.bootstrap((correct,), np.mean, n_resamples=4000, method="percentile",
                          confidence_level=0.95, random_state=1).confidence_interval
    # Different random draws: the percentiles agree to Monte Carlo error (about 6e-4 here).
    assert ours.estimate == correct.mean()
    assert abs(ours.low - ref.low) < 3e-3 and abs(ours.high - ref.high) < 3e-3
    k, n = int(correct.sum()), len(correct)
    wilson = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert abs(ours.low - wilson.low) < 4e-3 and abs(ours.high - wilson.high) < 4e-3
    assert ours.half_width == pytest.approx((ours.high - ours.low) / 2)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    correct = _outcomes(500)
    a = bootstrap_interval(mean, correct, seed=3)
    assert a == bootstrap_interval(mean, correct, seed=3)
    assert a != bootstrap_interval(mean, correct, seed=4)


def test_correlations_equal_scipys_and_their_pairs_are_resampled_together():
    rng = np.random.default_rng(0)
    gold = np.round(rng.uniform(0, 5, 300), 1)  # rounded: many ties, as STS gold scores have
    pred = gold + rng.normal(0, 1.5, 300)
    assert spearman(pred, gold)[0] == pytest.approx(stats.spearmanr(pred, gold)[0], abs=1e-12)
    assert pearson(pred[None], gold[None])[0] == pytest.approx(stats.pearsonr(pred, gold)[0],
                                                               abs=1e-12)
    ours = bootstrap_interval(spearman, pred, gold, resamples=3000, seed=0)
    ref = stats.bootstrap((pred, gold), lambda x, y: stats.spearmanr(x, y)[0], paired=True,
                          vectorized=False, n_resamples=3000, method="percentile",
                          random_state=0).confidence_interval
    assert abs(ours.low - ref.low) < 0.01 and abs(ours.high - ref.high) < 0.01


def test_identical_predictions_are_no_difference():
    correct = _outcomes(1000)
    result = paired_difference(mean, [correct], [correct.copy()])
    assert result.difference.estimate == 0 and result.difference.low == 0 == result.difference.high
    assert result.p_value == 1.0


def test_a_model_right_wherever_the_other_is_wrong_is_significant():
    a = _outcomes(400)
    result = paired_difference(mean, [a], [1 - a], resamples=999)
    assert result.difference.estimate == pytest.approx(2 * a.mean() - 1)
    assert result.p_value == pytest.approx(1 / 1000)  # no swap is as extreme as the truth
    both_right = paired_difference(mean, [np.ones(400)], [np.zeros(400)], resamples=999)
    assert both_right.difference.estimate == 1 and both_right.p_value == pytest.approx(1e-3)


def test_a_few_flipped_samples_are_not_significant():
    a = _outcomes(2000)
    b = a.copy()
    b[:3] = 1 - b[:3]
    result = paired_difference(mean, [a], [b], resamples=2000)
    assert result.p_value > 0.2
    assert result.difference.low <= result.difference.estimate <= result.difference.high


def test_paired_difference_of_correlations_swaps_whole_pairs():
    rng = np.random.default_rng(1)
    gold = rng.uniform(0, 5, 200)
    good, bad = gold + rng.normal(0, 0.5, 200), gold + rng.normal(0, 3, 200)
    result = paired_difference(spearman, [good, gold], [bad, gold], resamples=500)
    assert result.a == pytest.approx(stats.spearmanr(good, gold)[0])
    assert result.b == pytest.approx(stats.spearmanr(bad, gold)[0])
    assert result.difference.low > 0 and result.p_value < 0.01


def test_holm_steps_down_and_stops_at_the_first_failure():
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.2, 0.3]) == [False, False]
    assert holm([0.01, 0.02]) == [True, True]  # 0.01 <= 0.025, then 0.02 <= 0.05
    assert holm([]) == []


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no evaluation samples"):
        bootstrap_interval(mean, np.array([]))
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_interval(spearman, np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(mean, np.ones(3), confidence=95)


def test_exact_draws_for_0_1_outcomes_agree_with_resampling_them():
    from itra_bench.bootstrap import group_mean_interval, group_mean_paired

    rng = np.random.default_rng(7)
    a = rng.random(3000) < 0.7
    b = a.copy()
    flip = rng.random(3000) < 0.06
    b[flip] = ~b[flip]
    fast = group_mean_interval(a, resamples=4000, seed=0)
    slow = bootstrap_interval(mean, a.astype(float), resamples=4000, seed=0)
    assert fast.estimate == slow.estimate
    assert abs(fast.low - slow.low) < 3e-3 and abs(fast.high - slow.high) < 3e-3
    fast = group_mean_paired(b, a, resamples=4000, seed=0)
    slow = paired_difference(mean, [b.astype(float)], [a.astype(float)], resamples=4000,
                             seed=0)
    assert fast.difference.estimate == pytest.approx(slow.difference.estimate, abs=1e-15)
    assert (fast.a, fast.b) == (pytest.approx(slow.a), pytest.approx(slow.b))
    assert abs(fast.difference.low - slow.difference.low) < 2e-3
    assert abs(fast.difference.high - slow.difference.high) < 2e-3
    assert fast.p_value == pytest.approx(slow.p_value, abs=0.03)
    # The known answers: no disagreement, and B right wherever A is wrong.
    same = group_mean_paired(a, a, resamples=999)
    assert same.p_value == 1.0 and same.difference.low == same.difference.high == 0
    best = group_mean_paired(np.ones(400, bool), np.arange(400) % 2 == 0, resamples=999)
    assert best.p_value == pytest.approx(1 / 1000) and best.difference.low > 0.4


def test_exact_group_means_agree_with_resampling_samples():
    """Mean per-class recall and soft scores (VQA accuracy) through multinomial cell counts
    against drawing sample indices: the same distribution, so the same interval and p-value
    up to Monte Carlo error."""
    from itra_bench.bootstrap import group_mean_interval, group_mean_paired
    from itra_bench.outcome_kinds import _classification_statistic
    from itra_bench.sample_outcomes import SampleOutcomes

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 12, 1500)
    hits_a = rng.random(1500) < np.where(labels < 6, 0.9, 0.5)
    hits_b = np.where(rng.random(1500) < 0.1, ~hits_a, hits_a)
    per_class = _classification_statistic("mean_per_class_recall", {"label": labels})

    def stat(hits: np.ndarray, label: np.ndarray) -> np.ndarray:
        return per_class(np.where(hits, 0, 1), label)

    fast = group_mean_interval(hits_a, labels, resamples=4000, seed=0)
    slow = bootstrap_interval(stat, hits_a, labels, resamples=4000, seed=0)
    assert fast.estimate == pytest.approx(slow.estimate, abs=1e-12)
    assert abs(fast.low - slow.low) < 4e-3 and abs(fast.high - slow.high) < 4e-3
    fast = group_mean_paired(hits_b, hits_a, labels, resamples=4000, seed=0)
    slow = paired_difference(stat, [hits_b, labels], [hits_a, labels], resamples=4000, seed=0)
    assert fast.difference.estimate == pytest.approx(slow.difference.estimate, abs=1e-12)
    assert abs(fast.difference.low - slow.difference.low) < 4e-3
    assert abs(fast.difference.high - slow.difference.high) < 4e-3
    assert fast.p_value == pytest.approx(slow.p_value, abs=0.03)

    soft_a = rng.choice([0, 0.3, 0.6, 0.9, 1.0], 2000)
    soft_b = np.clip(soft_a + rng.choice([0, 0, 0.3, -0.3], 2000), 0, 1)
    fast = group_mean_paired(soft_b, soft_a, resamples=4000, seed=1)
    slow = paired_difference(mean, [soft_b], [soft_a], resamples=4000, seed=1)
    assert abs(fast.difference.low - slow.difference.low) < 3e-3
    assert abs(fast.difference.high - slow.difference.high) < 3e-3
    assert fast.p_value == pytest.approx(slow.p_value, abs=0.03)
    # Too many distinct values for cell counts: the caller resamples samples instead.
    assert group_mean_interval(rng.random(5000)) is None
    outcomes = SampleOutcomes("means", {"score": rng.random(5000)})
    from itra_bench.sample_outcomes import interval

    assert interval(outcomes, "score", resamples=200).low < outcomes.value("score")
