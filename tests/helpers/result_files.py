"""Result files written by hand (no model runs): a valid result with its per-sample
outcomes, for the tests of what reads results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from itra_bench.results import ResultStore
from itra_bench.sample_outcomes import SampleOutcomes, samples_path, write_outcomes


def write_result(store: ResultStore, model: str, task: str, value: float,
                 fingerprint: str = "f" * 16, **fields: object) -> Path:
    """A valid zero-shot result of ``model`` on ``task`` (suite ``mine`` of tasks t1 and t2)
    with its ``classification`` outcomes (8 samples); ``fields`` replace the record's own."""
    path = store.path(model, fingerprint, task, "default")
    labels = np.arange(8) % 2
    samples = write_outcomes(samples_path(path), SampleOutcomes(
        "classification", {"rank": (np.arange(8) * value > 2).astype(int), "label": labels}))
    store.write(path, {
        "model": {"name": model, "fingerprint": fingerprint, "modalities": ["image", "text"]},
        "task": task, "variant": "default", "protocol": "zeroshot", "suites": ["mine"],
        "suite_members": {"mine": ["t1", "t2"]}, "main_score": "acc1",
        "main_score_value": value,
        "main_score_interval": {"low": value - 0.1, "high": value + 0.1, "confidence": 0.95,
                                "resamples": 100, "seed": 0},
        "metrics": {"acc1": value}, "data": {"identity": "d"}, "details": {},
        "samples": samples, **fields})
    return path


def write_two_models(root: Path) -> ResultStore:
    """Models ``a`` and ``b`` on tasks t1 and t2 (b scores higher)."""
    store = ResultStore(root)
    for model, value in (("a", 0.5), ("b", 0.75)):
        for task in ("t1", "t2"):
            write_result(store, model, task, value, fingerprint=model * 16)
    return store
