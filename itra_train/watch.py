"""``itra-bench watch``: evaluate each checkpoint of a training run once, as it appears,
printing each epoch's main scores; it ends when the run is finished (``finished.json``), after
``--idle`` seconds without a new checkpoint, or after one pass with ``--once``.

For every ``checkpoints/epoch_N.pt`` (``epoch_latest.pt`` is a moving copy and is skipped),
the tasks run through ``itra-bench run --model epoch_N.pt`` (the checkpoint carries its model
settings); results go to the usual store, one row per epoch to
``evaluation_metrics_all.csv`` and a plot of every main score over epochs to
``evaluation_metrics_all.png``, both beside ``checkpoints/``.

Under torchrun or srun every rank evaluates each checkpoint together (sharded as
``itra-bench run`` is); rank 0 decides which checkpoints are new and writes the table and plot.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from itra_bench import (
    Registry,
    RunSettings,
    TaskScore,
    UserError,
    World,
    atomic_write,
    atomic_write_text,
    broadcast_from_main,
    evaluate,
)

from .run_folder import FINISHED_NAME

CSV_NAME = "evaluation_metrics_all.csv"
PLOT_NAME = "evaluation_metrics_all.png"
_EPOCH = re.compile(r"epoch_(\d+)\.pt$")


def checkpoints(run_folder: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the run's numbered checkpoints, in epoch order."""
    folder = run_folder / "checkpoints"
    found = []
    for path in folder.glob("epoch_*.pt"):
        match = _EPOCH.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    columns = ["epoch", "checkpoint"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: int(r["epoch"])))
    atomic_write_text(path, buffer.getvalue())


def plot(rows: list[dict[str, str]], path: Path) -> None:
    """One panel per main score, over epochs, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    scores = [k for k in rows[0] if k not in ("epoch", "checkpoint")] if rows else []
    if not scores:
        return
    fig, axes = plt.subplots(len(scores), 1, figsize=(6, 2.4 * len(scores)), squeeze=False)
    for ax, name in zip(axes[:, 0], scores, strict=True):
        points = sorted((int(r["epoch"]), float(r[name])) for r in rows if r.get(name))
        ax.plot([e for e, _ in points], [100 * v for _, v in points], marker="o")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def finished(run_folder: Path) -> bool:
    """Whether the training run in ``run_folder`` has trained all its epochs: it wrote
    ``finished.json``, or (a run from before that marker) it has the checkpoint of the
    last epoch its ``params.txt`` names."""
    if (run_folder / FINISHED_NAME).is_file():
        return True
    params = run_folder / "params.txt"
    text = params.read_text(encoding="utf-8", errors="replace") if params.is_file() else ""
    match = re.search(r"^epochs: (\d+)$", text, re.M)
    return match is not None and (run_folder / "checkpoints" / f"epoch_{match[1]}.pt").is_file()


def _scores_line(epoch: int, outcomes: Iterable[TaskScore]) -> str:
    """One line of an epoch's main scores (in %)."""
    scores = [f"{o.task} ({o.variant}) {o.main_score} {100 * o.value:.2f}"
              for o in outcomes if o.value is not None]
    return f"epoch {epoch}: " + ("; ".join(scores) or "no score")


def watch(run_folder: Path, tasks: list[str], settings: RunSettings, registry: Registry,
          console: Console, once: bool = False, interval: float = 60.0,
          idle: float | None = None, world: World | None = None) -> list[dict[str, str]]:
    """Evaluate new checkpoints of ``run_folder`` on ``tasks`` (with the run ``settings``
    of :func:`itra_bench.evaluate`), printing each epoch's main scores, until the run is
    finished (:func:`finished`), ``idle`` seconds pass without a new checkpoint, or after one
    pass with ``once``; returns the rows of ``evaluation_metrics_all.csv``."""
    world = world or World()
    if not (run_folder / "checkpoints").is_dir():
        raise UserError(f"{run_folder} is not an itra-train run folder (no checkpoints/ inside); "
                        "give <logs>/<name>")
    table = run_folder / CSV_NAME
    last_new = time.monotonic()
    while True:
        # Looked at before listing: the trainer marks a run finished after its last
        # checkpoint, so this pass's list then holds every checkpoint.
        ended = world.is_main and finished(run_folder)
        rows = _read_rows(table) if world.is_main else []
        done = {int(r["epoch"]) for r in rows}
        todo = [(epoch, str(path)) for epoch, path in checkpoints(run_folder)
                if epoch not in done]
        stop = None
        if ended:
            stop = "the training run is finished"
        elif not todo and idle is not None and time.monotonic() - last_new >= idle:
            stop = f"no new checkpoint for {idle:g} s (--idle {idle:g})"
        # The ranks may see the folder at slightly different moments: rank 0's view counts.
        todo, stop = broadcast_from_main((todo, stop), world, "list the new checkpoints")
        for epoch, path in todo:
            if world.is_main:
                console.print(f"[bold]epoch {epoch}[/]: evaluating {path}")
            outcomes = evaluate(path, tasks, registry=registry, console=console,
                                show_progress=False, world=world, **settings)
            row = {"epoch": str(epoch), "checkpoint": path}
            for o in outcomes:
                if o.value is not None:
                    row[f"{o.task}/{o.variant}/{o.main_score}"] = f"{o.value:.6f}"
            rows.append(row)
            if world.is_main:
                console.print(escape(_scores_line(epoch, outcomes)), highlight=False)
                _write_rows(table, rows)
                plot(rows, run_folder / PLOT_NAME)
        if todo:
            last_new = time.monotonic()
        if stop is not None:
            if world.is_main:
                console.print(f"{escape(stop)}: stopping")
            return rows
        if once:
            return rows
        time.sleep(interval)
