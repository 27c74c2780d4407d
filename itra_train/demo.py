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
from typing import TYPE_CHECKING

from rich.console import Console

from . import checkpoint
from .demo_data import write_digits_csv

if TYPE_CHECKING:
    from yacs.config import CfgNode

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
    "--image-tower", "openclip:itra-demo", "--text-tower", "openclip:itra-demo",
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


def _finished_epochs(run: Path, cfg: CfgNode) -> int:
    """The epochs an unfinished demo run in ``run`` completed with the recipe ``cfg``, with
    every checkpoint the demo keeps for them: the run can be resumed there. 0 when there is
    nothing to resume (no run, another recipe, a finished or damaged run)."""
    from itra_bench import UserError

    from .config import differences

    latest = checkpoint.latest_path(run)
    if not latest.is_file():
        return 0
    try:
        saved = checkpoint.load(latest)
    except UserError:
        return 0  # unreadable: trained again from the start
    epoch = saved.get("epoch")
    if not isinstance(epoch, int) or not 0 < epoch < DEMO_EPOCHS \
            or differences(saved["config"], cfg):
        return 0
    kept = [checkpoint.epoch_path(run, e) for e in range(DEMO_SAVE_EVERY, epoch + 1,
                                                         DEMO_SAVE_EVERY)]
    return epoch if all(p.is_file() for p in kept) else 0


def train_demo(folder: Path | None = None, workers: int = 1, retrain: bool = False,
               console: Console | None = None) -> Path:
    """The demo checkpoint: trained now unless already there; returns its path."""
    from itra_bench import load_registry, torch_threads

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
        csv = write_digits_csv(folder / "data")
        settings = [*DEMO_SETTINGS, "--train-data", str(csv), "--logs", str(folder / "logs"),
                    "--name", "demo", "--workers", str(workers)]
        cfg, _ = load_config(settings)
        done = 0 if retrain else _finished_epochs(run, cfg)
        if done:
            # An interrupted first use: the trainer's resume gives the very weights of an
            # uninterrupted training, and the finished epochs are not trained again.
            console.print(f"[bold]resuming the demo training[/] after epoch {done} of "
                          f"{DEMO_EPOCHS} (an earlier training was interrupted) in {run}")
            cfg, _ = load_config([*settings, "--resume", "latest"])
        else:
            if run.exists():
                import shutil

                # Outdated, damaged or stopped in its first epoch: start it cleanly.
                shutil.rmtree(run)
            console.print(f"[bold]training the demo model[/] (digits, ~1 minute on one CPU "
                          f"core) in {run}")
        with torch_threads(DEMO_THREADS):
            Trainer(cfg, load_registry([], []), World()).fit()
    return final
