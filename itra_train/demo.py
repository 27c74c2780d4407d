"""The embedded demo: train a tiny CLIP on scikit-learn's digits, then evaluate it.

``itra-bench demo`` runs the whole loop; the ``demo`` model spec of ``itra-bench run`` loads
the checkpoint it produces, training it on first use and caching it (about a minute on one
CPU core). The held-out digits that the ``demo`` suite evaluates are never trained on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from . import checkpoint
from .demo_data import write_digits_csv

#: Bump when the recipe changes, so cached demo weights are retrained (v2: text towers
#: train at their real length, which changes the weights in their last bits; v3: trained
#: with DEMO_THREADS intra-op threads on every machine).
DEMO_VERSION = "v3"
ENV_DIR = "ITRA_BENCH_DEMO_DIR"
DEMO_EPOCHS = 10
#: Checkpoints are kept every 2 epochs, so that early and late epochs can be compared
#: (``itra-bench compare``).
DEMO_SAVE_EVERY = 2
#: Intra-op threads the demo trains with, whatever the machine's core count: a float sum
#: split over another number of threads rounds differently, and over 580 steps the last-bit
#: differences grow into other weights (zero-shot top-1 moved by 0.2 points between 1 and 2
#: threads). With one count everywhere, a given CPU and torch version always train the same
#: weights. One thread is also the fastest for a model this small: 60 s against 317 s on 2
#: threads, on 2 cores shared with other work.
DEMO_THREADS = 1
#: The recipe: about a minute on one CPU core; zero-shot top-1 on the held-out digits ~97 %.
DEMO_SETTINGS = [
    "--image-model-builder", "openclip", "--image-model", "itra-demo",
    "--text-model-builder", "openclip", "--text-model", "itra-demo",
    "--loss", "infonce", "--epochs", str(DEMO_EPOCHS), "--batch-size", "64", "--lr", "2e-3",
    "--wd", "0.1", "--warmup", "50", "--precision", "fp32", "--seed", "0",
    "--save-frequency", str(DEMO_SAVE_EVERY), "--log-every-n-steps", "50", "--device", "cpu",
]


def demo_dir() -> Path:
    """Where the demo's data, run folder and checkpoint live (``$ITRA_BENCH_DEMO_DIR`` or
    ``~/.cache/itra_bench/demo-<version>``)."""
    root = os.environ.get(ENV_DIR)
    return Path(root).expanduser() if root else \
        Path.home() / ".cache" / "itra_bench" / f"demo-{DEMO_VERSION}"


def demo_checkpoint_path(folder: Path | None = None) -> Path:
    """The final checkpoint of the demo run in ``folder`` (default :func:`demo_dir`)."""
    return checkpoint.epoch_path((folder or demo_dir()) / "logs" / "demo", DEMO_EPOCHS)


def demo_checkpoints(folder: Path | None = None) -> list[Path]:
    """Every checkpoint the demo run keeps (epochs 2, 4, ..., 10), last one last."""
    run = (folder or demo_dir()) / "logs" / "demo"
    return [checkpoint.epoch_path(run, e)
            for e in range(DEMO_SAVE_EVERY, DEMO_EPOCHS + 1, DEMO_SAVE_EVERY)]


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One process trains the demo at a time; the others wait and then reuse its result."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_demo(folder: Path | None = None, workers: int = 1, retrain: bool = False,
               console: Console | None = None) -> Path:
    """The demo checkpoint: trained now unless already there; returns its path."""
    from itra_bench.registry import load_registry
    from itra_bench.threads import torch_threads

    from .config import load_config
    from .distributed import World
    from .trainer import Trainer

    folder = folder or demo_dir()
    console = console or Console(stderr=True)
    final = demo_checkpoint_path(folder)
    with _lock(folder):
        # A run from before checkpoints were kept every 2 epochs lacks the early ones.
        if all(p.exists() for p in demo_checkpoints(folder)) and not retrain:
            return final
        run = final.parent.parent
        if run.exists():
            import shutil

            shutil.rmtree(run)  # an unfinished or outdated demo run: start it cleanly
        console.print(f"[bold]training the demo model[/] (digits, ~1 minute on one CPU core) "
                      f"in {run}")
        csv = write_digits_csv(folder / "data")
        cfg, _ = load_config([*DEMO_SETTINGS, "--train-data", str(csv), "--logs",
                              str(folder / "logs"), "--name", "demo", "--workers", str(workers)])
        with torch_threads(DEMO_THREADS):
            Trainer(cfg, load_registry([], []), World()).fit()
    return final
