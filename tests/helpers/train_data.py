"""Small image-caption CSVs for trainer tests, cut from the demo's digits CSV."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
TINY = ["--image-tower", "openclip:itra-demo", "--text-tower", "openclip:itra-demo",
        "--batch-size", "32",
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


def trainer_from_flags(data: Path, logs: Path, *flags: object) -> Any:
    """The Trainer ``itra-train`` would build from the tiny settings and ``flags``, in
    ``logs/run`` (in this process, not yet trained), so tests can read its optimizer."""
    from itra_bench.registry import load_registry
    from itra_train.config import load_config
    from itra_train.distributed import World
    from itra_train.trainer import Trainer

    argv = ["--train-data", data, "--logs", logs, "--name", "run", *TINY, *flags]
    cfg, plugins = load_config([str(a) for a in argv])
    return Trainer(cfg, load_registry(plugins, []), World())


def optimized_names(trainer: Any) -> list[str]:
    """Names of the parameters in the optimizer's groups (``loss.`` for the loss's own)."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    names.update({id(p): f"loss.{n}" for n, p in trainer.loss_fns.named_parameters()})
    return [names[id(p)] for group in trainer.optimizer.param_groups for p in group["params"]]


def evaluate_checkpoint(cli, ckpt: Path, tmp_path: Path) -> dict:
    """``itra-bench run --model CKPT --tasks digits-zeroshot`` (no other model flag); the
    stored record."""
    out = tmp_path / "results"
    res = cli("run", "--model", ckpt, "--tasks", "digits-zeroshot", "--output", out,
              "--workers", "0", "--device", "cpu", "--no-progress", "--cache-dir",
              tmp_path / "cache")
    assert res.code == 0, res
    record = json.loads(next(out.rglob("*.json")).read_text())
    assert record["task"] == "digits-zeroshot" and 0 <= record["main_score_value"] <= 1
    return record


@contextlib.contextmanager
def interrupted_at_epoch(epoch: int) -> Iterator[None]:
    """Inside the block, training stops with Ctrl-C (KeyboardInterrupt) when it starts the
    0-based ``epoch``: a run to resume."""
    from itra_train.trainer import Trainer

    original = Trainer.train_one_epoch

    def interrupted(self: Trainer, at: int) -> dict:
        if at == epoch:
            raise KeyboardInterrupt
        return original(self, at)

    Trainer.train_one_epoch = interrupted
    try:
        yield
    finally:
        Trainer.train_one_epoch = original
