"""Intervals and paired tests on results of real runs (the demo suite, a COCO-format
retrieval task), checked against reference computations on the stored per-sample outcomes:
Wilson's interval, scipy.stats.bootstrap, McNemar's exact test."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from sklearn.metrics import normalized_mutual_info_score

from itra_bench.results import iter_records
from itra_bench.sample_outcomes import read_outcomes

PIXEL = ("--plugin", "itra_test_plugin")


def _run(cli, out: Path, *args: str) -> None:
    res = cli("run", *PIXEL, "--output", out, "--no-cache", "--workers", "0", "--no-progress",
              *args)
    assert res.code == 0, res


def _stored(out: Path, model: str = "pixel") -> dict[str, tuple[dict, object]]:
    return {r["task"]: (r, read_outcomes(p, r)) for p, r in iter_records(out)
            if r["model"]["name"] == model}


def _scipy(data: tuple, statistic, paired: bool = False):
    return stats.bootstrap(data, statistic, paired=paired, vectorized=False, n_resamples=2000,
                           method="percentile", random_state=0).confidence_interval


def _close(low: float, high: float, ref, ends: float, width: float) -> None:
    """Both ends within ``ends`` and the width within ``width`` of the reference (a 90 %
    interval in place of a 95 % one is narrower by more than these tolerances)."""
    assert abs(low - ref.low) < ends and abs(high - ref.high) < ends, (low, high, ref)
    assert abs((high - low) - (ref.high - ref.low)) < width, (low, high, ref)


def test_demo_suite_intervals_match_wilson_and_scipy(cli, tmp_path):
    _run(cli, tmp_path / "out", "--model", "pixel", "--tasks", "demo")
    stored = _stored(tmp_path / "out")
    for task in ("digits-zeroshot", "digits-knn", "digits-linear-probe"):
        record, outcomes = stored[task]
        ci = record["main_score_interval"]
        hits = outcomes.arrays["rank"] == 0
        assert hits.mean() == pytest.approx(record["main_score_value"], abs=1e-12)
        wilson = stats.binomtest(int(hits.sum()), len(hits)).proportion_ci(method="wilson")
        # 540 test digits: scores move in steps of 1/540 = 0.00185.
        _close(ci["low"], ci["high"], wilson, ends=0.005, width=0.0025)
        _close(ci["low"], ci["high"], _scipy((hits.astype(float),), np.mean), ends=0.004,
               width=0.0025)
    record, outcomes = stored["digits-clustering"]
    ci = record["main_score_interval"]
    label, cluster = outcomes.arrays["label"], outcomes.arrays["cluster"]
    # Resampling inflates NMI (a duplicated image agrees with its copy): the interval is
    # scipy's percentile one moved by as much as moves the median resampled NMI onto the score.
    nmi = normalized_mutual_info_score(label, cluster)
    boot = stats.bootstrap((label, cluster), normalized_mutual_info_score, paired=True,
                           vectorized=False, n_resamples=2000, method="percentile",
                           random_state=0)
    shift = np.median(boot.bootstrap_distribution) - nmi
    ref = SimpleNamespace(low=boot.confidence_interval.low - shift,
                          high=boot.confidence_interval.high - shift)
    _close(ci["low"], ci["high"], ref, ends=0.008, width=0.006)
    assert ci["low"] <= record["main_score_value"] <= ci["high"]


def test_paired_test_on_real_runs_matches_mcnemar_and_scipy(cli, tmp_path):
    out = tmp_path / "out"
    _run(cli, out, "--model", "pixel", "--model", "pixel:dim8", "--tasks", "digits-zeroshot",
         "digits-knn", "digits-linear-probe")
    res = cli("compare", out, "--models", "pixel", "pixel:dim8", "--format", "json",
              "--resamples", "4000")
    assert res.code == 0, res
    rows = {r["task"]: r for r in json.loads(res.out)}
    a, b = _stored(out, "pixel"), _stored(out, "pixel:dim8")
    for task in ("digits-zeroshot", "digits-knn", "digits-linear-probe"):
        hits_a = a[task][1].arrays["rank"] == 0
        hits_b = b[task][1].arrays["rank"] == 0
        only_a, only_b = int(np.sum(hits_a & ~hits_b)), int(np.sum(~hits_a & hits_b))
        # The permutation test of paired 0/1 outcomes is McNemar's exact (binomial) test.
        mcnemar = stats.binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1
        row = rows[task]
        assert row["p_value"] == pytest.approx(mcnemar, abs=0.02 + 0.1 * mcnemar), task
        ref = _scipy((hits_a.astype(float), hits_b.astype(float)),
                     lambda x, y: np.mean(y) - np.mean(x), paired=True)
        _close(row["low"] / 100, row["high"] / 100, ref, ends=0.005, width=0.004)


def _write_coco(root: Path, images: int = 60) -> None:
    rng = np.random.default_rng(0)
    entries, annotations = [], []
    folder = root / "coco2017" / "val2017"
    folder.mkdir(parents=True)
    for n in range(images):
        name = f"{n:012d}.jpg"
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((16, 16)).save(folder / name, quality=95)
        entries.append({"file_name": name, "id": n, "height": 16, "width": 16})
        annotations += [{"image_id": n, "id": 100 * n + c,
                         "caption": f"picture {n % 7} with caption {c}"}
                        for c in range(1 + n % 5)]
    (root / "coco2017" / "annotations").mkdir(parents=True)
    (root / "coco2017" / "annotations" / "captions_val2017.json").write_text(json.dumps(
        {"images": entries, "annotations": annotations}))


def test_coco_retrieval_interval_matches_a_cluster_bootstrap_by_scipy(cli, tmp_path):
    _write_coco(tmp_path / "data")
    _run(cli, tmp_path / "out", "--plugin", "itra_bench.tasks.coco.plugin", "--model", "pixel",
         "--tasks", "coco2017-retrieval", "--data-root", tmp_path / "data")
    record, outcomes = _stored(tmp_path / "out")["coco2017-retrieval"]
    image_rank = outcomes.arrays["image_rank"]
    text_rank = outcomes.arrays["text_rank"]
    owner = outcomes.arrays["caption_image"]
    captions_of = [np.flatnonzero(owner == i) for i in range(len(text_rank))]

    def mean_recall(images: np.ndarray) -> float:
        # Written out from the definitions: images drawn with replacement, each with all its
        # captions; ranks against the full gallery are kept.
        captions = np.concatenate([captions_of[i] for i in images])
        recalls = [np.mean(text_rank[images] < k) for k in (1, 5, 10)]
        recalls += [np.mean(image_rank[captions] < k) for k in (1, 5, 10)]
        return float(np.mean(recalls))

    every = np.arange(len(text_rank))
    assert mean_recall(every) == pytest.approx(record["main_score_value"], abs=1e-12)
    ref = _scipy((every,), mean_recall)
    ci = record["main_score_interval"]
    _close(ci["low"], ci["high"], ref, ends=0.008, width=0.006)
