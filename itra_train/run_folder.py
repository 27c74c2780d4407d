"""The run folder as ITRA users know it: ``<logs>/<name>/`` with ``checkpoints/``,
``out.log``, ``params.txt``, ``results.jsonl`` and ``tensorboard/``. Only rank 0 writes, and
only one run at a time: rank 0 holds ``run.lock`` while the run lives."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
from pathlib import Path
from typing import IO, Any

from yacs.config import CfgNode

from itra_bench.atomic_io import atomic_write_text, remove_stale_temp_files
from itra_bench.errors import UserError

LOGGER_NAME = "itra_train"
LOCK_NAME = "run.lock"
#: Temp files of this run's atomic writes (:mod:`itra_bench.atomic_io`: ``.NAME.XXXX.tmp``),
#: by folder; other tools' files beside them (``itra-bench watch``'s) are left alone.
TEMP_GLOBS = {".": ".results.jsonl.*.tmp", "checkpoints": ".*.tmp"}


def _lock(folder: Path) -> IO[str]:
    """Hold ``folder/run.lock`` (an exclusive ``flock``, released when the process ends,
    however it ends); a folder another live run holds is refused, naming its pid."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"run folder {folder} is in use by another itra-train run (pid "
                        f"{holder}); wait for it to finish, or choose another --name or "
                        "--logs") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _remove_temp_files(folder: Path) -> None:
    """Delete what atomic writes killed half-way left behind."""
    for place, pattern in TEMP_GLOBS.items():
        remove_stale_temp_files(folder / place, pattern=pattern)


class RunFolder:
    """Writers for one run's folder; on ranks other than 0 every write is a no-op."""

    def __init__(self, folder: Path, is_main: bool) -> None:
        self.folder = folder
        self.is_main = is_main
        self._tb: Any = None
        self._lock: IO[str] | None = _lock(folder) if is_main else None
        if is_main:
            _remove_temp_files(folder)
        self.log = logging.getLogger(LOGGER_NAME)
        self.log.setLevel(logging.INFO if is_main else logging.WARNING)
        self.log.propagate = False
        for handler in list(self.log.handlers):
            self.log.removeHandler(handler)
            handler.close()
        fmt = logging.Formatter("%(asctime)s | %(levelname)s | %(message)s", "%Y-%m-%d,%H:%M:%S")
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        self.log.addHandler(stream)
        if is_main:
            (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
            file = logging.FileHandler(folder / "out.log", encoding="utf-8")
            file.setFormatter(fmt)
            self.log.addHandler(file)

    def write_params(self, cfg: CfgNode) -> None:
        """``params.txt``: one ``key: value`` line per setting, as ITRA writes it."""
        if self.is_main:
            lines = [f"{key}: {cfg[key]!r}" for key in sorted(cfg)]
            (self.folder / "params.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def append_result(self, record: dict[str, Any]) -> None:
        """One JSON line in ``results.jsonl``."""
        if self.is_main:
            with open(self.folder / "results.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def restore_results(self, history: list[dict[str, Any]]) -> int:
        """Add to ``results.jsonl`` the epochs of ``history`` (what a checkpoint recorded) that
        it lacks, as when a run was killed between its checkpoint and its results line; returns
        how many lines were restored."""
        if not self.is_main:
            return 0
        path = self.folder / "results.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        kept = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by the kill
                record = json.loads(line)
                if isinstance(record, dict):
                    kept.append(record)
        present = {r.get("epoch") for r in kept}
        lost = [r for r in history if r.get("epoch") not in present]
        if lost or len(kept) != len(lines):
            records = sorted([*kept, *lost], key=lambda r: r.get("epoch") or 0)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        return len(lost)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """TensorBoard scalars under ``tensorboard/``."""
        if not self.is_main:
            return
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.folder / "tensorboard"))
        for tag, value in values.items():
            self._tb.add_scalar(tag, value, step)
        self._tb.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer and the log file; release the lock."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        for handler in list(self.log.handlers):
            self.log.removeHandler(handler)
            handler.close()
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None
