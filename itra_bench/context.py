"""The run context a task receives: device, precision, batching, cache, progress, output."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

# The precision's names and rules live in itra_bench.precision; these names stay importable
# from here, where they were first.
from itra_bench.precision import PRECISION_ALIASES as PRECISION_ALIASES
from itra_bench.precision import PRECISIONS as PRECISIONS
from itra_bench.precision import check_precision as check_precision
from itra_bench.precision import precision_autocast
from itra_bench.precision import precision_name as precision_name

if TYPE_CHECKING:
    import torch

    from itra_bench.feature_cache import FeatureCache, FeatureMemory
    from itra_bench.progress import ProgressReporter

#: Seconds a collective may wait for a slow or hung rank before the job ends (``--dist-timeout``;
#: here, not in ``itra_bench.distributed``, so that ``--help`` shows it without importing torch).
DEFAULT_TIMEOUT = 1800.0


def default_workers() -> int:
    """DataLoader workers by default: one core is left to the forward pass (on 2 cores one
    worker beats two; see benchmarks/README.md), at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


def _no_progress() -> ProgressReporter:
    from itra_bench.progress import ProgressReporter

    return ProgressReporter(enabled=False)


#: The fields of a context that a run's settings give as they are (see
#: :meth:`RunContext.from_settings`).
SETTINGS_FIELDS = ("precision", "batch_size", "workers", "seed", "skip_corrupt")


# torch is imported where a context is made or used, never by importing this module: the
# quick commands (`itra-bench list`, `--help`) read DEFAULT_TIMEOUT and default_workers from
# here.
@dataclass
class RunContext:
    """Everything a task needs from the runner besides the model.

    options: task options from the command line (``--task-option key=value``), for tasks that
    take parameters (k of k-NN, ...). output_dir: a folder for the task's extra files.
    """

    device: torch.device = field(default_factory=_cpu)
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = 0
    seed: int = 0
    data_root: Path = field(default_factory=Path.cwd)
    output_dir: Path = field(default_factory=Path.cwd)
    cache: FeatureCache | None = None
    #: Features already computed in this run (every process has its own), looked up first.
    memory: FeatureMemory | None = None
    skip_corrupt: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    progress: ProgressReporter = field(default_factory=_no_progress)
    console: Console = field(default_factory=lambda: Console(stderr=True))
    #: The distributed job (``itra_bench.distributed.World``); None: one process. Under a job
    #: every rank runs the task; image encoding is split across ranks, and only rank 0 has
    #: the feature cache and writes files.
    world: Any = None

    @classmethod
    def from_settings(cls, settings: Any, **fields: Any) -> RunContext:
        """The context of a run whose settings object (``itra_bench.runner.RunConfig``)
        gives the fields named alike (:data:`SETTINGS_FIELDS`); ``fields`` gives the rest
        (device, folders, cache, options, ...), which the runner resolves."""
        return cls(**{name: getattr(settings, name) for name in SETTINGS_FIELDS}, **fields)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision context for model forward passes, per ``precision``."""
        return precision_autocast(self.precision, self.device)


#: What ``--device`` accepts, as messages show it.
DEVICES = "auto | cpu | cuda[:N] | mps"


def resolve_device(name: str) -> torch.device:
    """The torch device of ``--device`` (``auto`` picks CUDA when available); a device this
    machine does not have, or a string that names none, is a user error."""
    import torch

    from itra_bench.errors import UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", name)
    if match is None or (match[2] is not None and match[1] != "cuda"):
        raise UserError(f"--device {name}: not a device itra-bench can use; give one of "
                        f"{DEVICES}")
    if match[1] == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is visible. Use --device cpu or "
                            "auto.")
        count = torch.cuda.device_count()
        if match[2] is not None and int(match[2]) >= count:
            raise UserError(f"--device {name}: only {count} CUDA device(s) are visible "
                            f"(cuda:0 to cuda:{count - 1})")
    if match[1] == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: Apple's MPS backend is not available on this "
                        "machine. Use --device cpu or auto.")
    return torch.device(name)
