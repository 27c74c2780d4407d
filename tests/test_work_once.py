"""Work is done once: features shared across a run's tasks, progress through long phases,
an interrupted demo training resumed (issue 21)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

PIXEL = ["--model", "pixel", "--plugin", "itra_test_plugin", "--workers", "0", "--no-progress"]


def _metrics(out: Path) -> dict[str, dict]:
    """Each stored result's metrics, by task and variant."""
    records = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    return {f"{r['task']}/{r['variant']}": r["metrics"] for r in records if "metrics" in r}


def test_demo_tasks_encode_each_split_once_without_the_disk_cache(cli, tmp_path):
    from itra_test_plugin import PixelModel

    PixelModel.images_encoded = 0
    res = cli("run", *PIXEL, "--tasks", "demo", "--no-cache", "--output", tmp_path / "mem")
    assert res.code == 0, res
    # digits: 1257 train and 540 test images, each encoded once for the five demo tasks.
    assert PixelModel.images_encoded == 1257 + 540
    res = cli("run", *PIXEL, "--tasks", "demo", "--cache-dir", tmp_path / "cache",
              "--output", tmp_path / "disk")
    assert res.code == 0, res
    in_memory, on_disk = _metrics(tmp_path / "mem"), _metrics(tmp_path / "disk")
    assert len(in_memory) >= 5 and in_memory == on_disk


class RecordingProgress:
    """Stands in for the run's ProgressReporter: records every bar's total and how far it got."""

    bars: list[dict] = []

    def __init__(self, *args, **kwargs) -> None:
        from itra_bench.progress import ProgressReporter

        self._real = ProgressReporter(*args, **kwargs)

    @contextlib.contextmanager
    def bar(self, description: str, total: int | None, unit: str = "it", completed: int = 0):
        record = {"description": description, "total": total, "completed": completed}
        RecordingProgress.bars.append(record)
        with self._real.bar(description, total, unit, completed) as real:
            yield _RecordingBar(real, record)


class _RecordingBar:
    def __init__(self, real, record: dict) -> None:
        self._real, self._record = real, record

    def advance(self, n: int = 1) -> None:
        self._record["completed"] += n
        self._real.advance(n)


def _probe_bars() -> list[dict]:
    return [b for b in RecordingProgress.bars if not b["description"].startswith("encode")]


def test_linear_probe_search_shows_progress_to_its_total(cli, tmp_path, monkeypatch):
    import itra_bench.runner
    from itra_bench.protocols.linear_probe import DEFAULT_L2_GRID

    RecordingProgress.bars = []
    monkeypatch.setattr(itra_bench.runner, "ProgressReporter", RecordingProgress)
    res = cli("run", *PIXEL, "--tasks", "digits-linear-probe", "--no-cache",
              "--output", tmp_path / "out")
    assert res.code == 0, res
    bars = _probe_bars()
    # One fit per L2 strength of the search, then the final fit.
    assert [(b["total"], b["completed"]) for b in bars] == [(len(DEFAULT_L2_GRID) + 1,) * 2]


def test_elevater_probe_search_shows_progress_to_its_total():
    import torch

    from itra_bench.threads import torch_threads
    from itra_bench.vision_benchmark.linear_probe import (
        ElevaterProbeConfig,
        elevater_linear_probe,
    )

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, generator=g), torch.arange(40) % 2
    cfg = ElevaterProbeConfig(epochs=2, extra_final_epochs=1)
    RecordingProgress.bars = []
    with torch_threads(1):
        elevater_linear_probe(x, y, x, 2, test_y=y, config=cfg, progress=RecordingProgress())
    # Epochs of the search's rounds (coarse, then one per refinement), then the final training.
    total = (1 + len(cfg.l2_spans)) * cfg.epochs + cfg.epochs + cfg.extra_final_epochs
    assert [(b["total"], b["completed"]) for b in _probe_bars()] == [(total, total)]


@pytest.mark.slow
def test_interrupted_demo_training_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    from rich.console import Console
    from train_data import epoch_records, interrupted_at_epoch

    from itra_train import checkpoint, demo

    # The demo's recipe cut to 4 epochs (checkpoints kept at 2 and 4), so that the test trains
    # an uninterrupted run and an interrupted-then-resumed one in less than a full demo's time.
    epochs = 4
    settings = list(demo.DEMO_SETTINGS)
    settings[settings.index("--epochs") + 1] = str(epochs)
    monkeypatch.setattr(demo, "DEMO_SETTINGS", settings)
    monkeypatch.setattr(demo, "DEMO_EPOCHS", epochs)
    quiet = Console(quiet=True)
    straight = demo.train_demo(tmp_path / "straight", console=quiet)

    with interrupted_at_epoch(2), pytest.raises(KeyboardInterrupt):  # Ctrl-C in epoch 3
        demo.train_demo(tmp_path / "resumed", console=quiet)
    run = tmp_path / "resumed" / "logs" / "demo"
    kept = checkpoint.epoch_path(run, 2)
    first_attempt = kept.stat().st_mtime_ns
    console = Console(record=True, width=400)
    resumed = demo.train_demo(tmp_path / "resumed", console=console)

    assert "resuming the demo training after epoch 2 of 4" in console.export_text()
    assert kept.stat().st_mtime_ns == first_attempt  # not trained again
    assert [r["epoch"] for r in epoch_records(run)] == [1, 2, 3, 4]
    want, got = checkpoint.load(straight)["model"], checkpoint.load(resumed)["model"]
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)


def test_feature_memory_keeps_the_most_recently_used_within_its_budget():
    from itra_bench.feature_cache import FeatureMemory

    def entry(rows: int) -> dict[str, torch.Tensor]:
        return {"features": torch.ones(rows, 4)}  # 16 bytes a row

    memory = FeatureMemory(max_bytes=80)
    memory.put("a", entry(2))
    memory.put("b", entry(2))
    assert memory.get("a") is not None  # now the most recently used
    memory.put("c", entry(2))  # 96 bytes would pass 80: "b", the least recent, goes
    assert memory.get("b") is None and memory.get("a") is not None
    memory.put("a", entry(3))  # replaced, not counted twice: 48 + 32 = 80 fits
    assert memory.get("a")["features"].shape == (3, 4) and memory.get("c") is not None
    memory.put("huge", entry(7))  # alone beyond the budget: not kept, nothing dropped
    assert memory.get("huge") is None and memory.get("a") is not None
    got = memory.get("c")
    got["features"].zero_()  # a private copy
    assert memory.get("c")["features"].sum() == 8
