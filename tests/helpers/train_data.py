"""Small image-caption CSVs for trainer tests, cut from the demo's digits CSV."""

from __future__ import annotations

import json
from pathlib import Path

from itra_train.demo_data import write_digits_csv

_CACHE: dict[str, Path] = {}


def digits_csv(folder: Path, rows: int) -> Path:
    """A CSV of the first ``rows`` rows of the digits training CSV, images beside it."""
    full = write_digits_csv(folder)
    lines = full.read_text().splitlines()
    out = folder / f"train_{rows}.csv"
    out.write_text("\n".join(lines[: rows + 1]) + "\n")
    return out


#: Settings of a tiny, fast run (the demo architecture, CPU, fp32, no workers).
TINY = ["--image-model", "itra-demo", "--text-model", "itra-demo", "--batch-size", "32",
        "--lr", "2e-3", "--wd", "0.1", "--warmup", "2", "--workers", "0", "--device", "cpu",
        "--precision", "fp32", "--no-progress", "--log-every-n-steps", "1"]


def train_run(train, data: Path, logs: Path, *extra: str, name: str = "run"):
    """``itra-train`` (the ``train`` fixture) on ``data`` with the tiny settings, in
    ``logs/name``."""
    return train("--train-data", data, "--logs", logs, "--name", name, *TINY, *extra)


def epoch_records(folder: Path) -> list[dict]:
    """The lines of a run folder's ``results.jsonl``."""
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def assert_same_weights(expected: dict, got: dict, lr: float, steps: int,
                        rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Two runs' weights agree, up to float32 reduction order.

    The key third of attention ``in_proj_bias`` (q | k | v) has an exact gradient of 0
    (softmax ignores a shift shared by all keys); Adam turns its rounding-noise gradient into
    steps of up to about ``lr``, so it is only held to ``2 * lr * steps``.
    """
    import torch

    assert expected.keys() == got.keys()
    for name, want in expected.items():
        have = got[name]
        if name.endswith("attn.in_proj_bias"):
            width = want.shape[0] // 3
            key = slice(width, 2 * width)
            torch.testing.assert_close(have[key], want[key], rtol=0, atol=2 * lr * steps)
            keep = torch.ones_like(want, dtype=torch.bool)
            keep[key] = False
            have, want = have[keep], want[keep]
        torch.testing.assert_close(have, want, rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")
