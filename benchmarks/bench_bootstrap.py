"""CPU time of the resampling statistics behind intervals and ``itra-bench compare``.

Each case times :func:`itra_bench.sample_outcomes.interval` (one result's 95 % interval) and
:func:`itra_bench.sample_outcomes.compare` (a paired difference with its p-value) with 1,000
resamples on seeded synthetic outcomes of a realistic size, in process CPU seconds (user +
system, all threads); cases alternate within each repeat and the median of ``--repeats`` is
reported with its range and the load average.

    python benchmarks/bench_bootstrap.py --repeats 3 --out bench_bootstrap.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from itra_bench.sample_outcomes import SampleOutcomes, compare, interval


def _cases(rng: np.random.Generator) -> dict[str, tuple[str, SampleOutcomes, SampleOutcomes]]:
    """name -> (metric, outcomes of model A, outcomes of model B)."""
    n = 50_000
    label = rng.integers(0, 1000, n)
    rank_a = np.where(rng.random(n) < 0.7, 0, rng.integers(1, 1000, n))
    rank_b = np.where(rng.random(n) < 0.05, rng.integers(0, 3, n), rank_a)

    def cls(rank: np.ndarray) -> SampleOutcomes:
        return SampleOutcomes("classification", {"rank": rank, "label": label})

    vqa_a = rng.choice([0, 0.3, 0.6, 0.9, 1.0], n)
    vqa_b = np.clip(vqa_a + rng.choice([0, 0, 0, 0.3, -0.3], n), 0, 1)
    images, per = 5000, 5
    owner = np.repeat(np.arange(images), per)

    def ret(shift: int) -> SampleOutcomes:
        return SampleOutcomes("retrieval", {
            "image_rank": np.maximum(rng.geometric(0.2, images * per) - 1 - shift, 0),
            "text_rank": np.maximum(rng.geometric(0.3, images) - 1 - shift, 0),
            "caption_image": owner, "ks": np.array([1, 5, 10])})

    gold = rng.uniform(0, 5, 1379)  # STS-B test pairs

    def sts(noise: float) -> SampleOutcomes:
        return SampleOutcomes("correlation", {"pred": gold + rng.normal(0, noise, 1379),
                                              "gold": gold})

    voc_labels = (rng.random((4952, 20)) < 0.08).astype(np.int8)

    def voc(signal: float) -> SampleOutcomes:
        scores = np.round(rng.random((4952, 20)) + signal * voc_labels, 6)
        return SampleOutcomes("multilabel", {"scores": scores, "labels": voc_labels})

    clusters = rng.integers(0, 10, 10_000)

    def clu(keep: float) -> SampleOutcomes:
        pred = np.where(rng.random(10_000) < keep, clusters, rng.integers(0, 10, 10_000))
        return SampleOutcomes("clustering", {"cluster": pred, "label": clusters})

    return {
        "accuracy, 50k images": ("acc1", cls(rank_a), cls(rank_b)),
        "mean per-class recall, 50k images, 1000 classes":
            ("mean_per_class_recall", cls(rank_a), cls(rank_b)),
        "VQA accuracy, 50k questions (soft scores)":
            ("vqa_acc", SampleOutcomes("means", {"vqa_acc": vqa_a}),
             SampleOutcomes("means", {"vqa_acc": vqa_b})),
        "COCO 5k retrieval mean recall (25k captions)": ("mean_recall", ret(0), ret(1)),
        "STS-B spearman, 1379 pairs": ("spearman", sts(1.0), sts(0.8)),
        "VOC 2007 11-point mAP, 4952 x 20": ("11point_mAP", voc(0.3), voc(0.4)),
        "clustering NMI, 10k images": ("nmi", clu(0.5), clu(0.6)),
    }


def _cpu(fn: Callable[..., object], *args: object) -> float:
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


def main() -> None:
    """Time every case; print a Markdown table and optionally write the raw figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the raw figures as JSON here")
    args = parser.parse_args()
    cases = _cases(np.random.default_rng(0))
    load_before = os.getloadavg()
    times: dict[str, dict[str, list[float]]] = {k: {"interval": [], "paired": []}
                                                for k in cases}
    for _ in range(args.repeats):
        for name, (metric, a, b) in cases.items():
            times[name]["interval"].append(_cpu(interval, a, metric))
            times[name]["paired"].append(_cpu(compare, a, b, metric))
    load_after = os.getloadavg()
    from machine_info import cpu_name

    print(f"{cpu_name()}, {os.cpu_count()} cores; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; {args.repeats} repeats, CPU seconds, median (min-max)\n")
    print("| outcomes | interval | paired test |\n|---|---:|---:|")
    for name, t in times.items():
        cells = [f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"
                 for v in (t["interval"], t["paired"])]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"cpu": cpu_name(), "cores": os.cpu_count(), "load_before": load_before,
                       "load_after": load_after, "times": times},
                      f, indent=2)


if __name__ == "__main__":
    main()
