"""The run folder as ITRA users know it: ``<logs>/<name>/`` with ``checkpoints/``,
``out.log``, ``params.txt``, ``results.jsonl``, ``tensorboard/`` and, once every epoch is
trained, ``finished.json``. Only rank 0 writes, and
only one run at a time: rank 0 holds ``run.lock`` while the run lives."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import IO, Any

from yacs.config import CfgNode

from itra_bench import UserError, atomic_write_text, remove_stale_temp_files, writing_into

LOGGER_NAME = "itra_train"
LOCK_NAME = "run.lock"
#: Written (atomically) when a run has trained all its epochs; removed when it continues.
FINISHED_NAME = "finished.json"
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
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    except BaseException:
        handle.close()  # releases the lock: the run does not start
        raise
    return handle


def _remove_temp_files(folder: Path) -> None:
    """Delete what atomic writes killed half-way left behind."""
    for place, pattern in TEMP_GLOBS.items():
        remove_stale_temp_files(folder / place, pattern=pattern)


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path (``folder`` included) that does not exist
    yet: what creating ``folder`` creates. None when ``folder`` exists."""
    missing = None
    for path in (folder, *folder.absolute().parents):
        if path.exists():
            break
        missing = path
    return missing


class RunFolder:
    """Writers for one run's folder; on ranks other than 0 every write is a no-op."""

    def __init__(self, folder: Path, is_main: bool) -> None:
        self.folder = folder
        self.is_main = is_main
        #: What this run created (the run folder or a parent), removed by :meth:`discard`.
        self.created = _first_missing(folder) if is_main else None
        self._tb: Any = None
        self._lock: IO[str] | None = None
        file = None
        if is_main:
            with self.writing():
                self._lock = _lock(folder)
                try:
                    _remove_temp_files(folder)
                    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
                    file = logging.FileHandler(folder / "out.log", encoding="utf-8")
                except BaseException:
                    self._lock.close()  # the folder is not this run's after all
                    raise
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
        if file is not None:
            file.setFormatter(fmt)
            self.log.addHandler(file)

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """A block whose failed writes (read-only, a full disk) are one user error naming
        ``--logs``."""
        return writing_into(self.folder.parent, "--logs")

    def write_params(self, cfg: CfgNode) -> None:
        """``params.txt``: one ``key: value`` line per setting, as ITRA writes it."""
        if self.is_main:
            lines = [f"{key}: {cfg[key]!r}" for key in sorted(cfg)]
            with self.writing():
                (self.folder / "params.txt").write_text("\n".join(lines) + "\n",
                                                        encoding="utf-8")

    def append_result(self, record: dict[str, Any]) -> None:
        """One JSON line in ``results.jsonl``."""
        if self.is_main:
            with self.writing(), open(self.folder / "results.jsonl", "a",
                                      encoding="utf-8") as handle:
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

    def mark_finished(self, record: dict[str, Any]) -> None:
        """``finished.json``: the run trained all its epochs (``record`` says how many)."""
        if self.is_main:
            atomic_write_text(self.folder / FINISHED_NAME, json.dumps(record) + "\n")

    def clear_finished(self) -> None:
        """Remove ``finished.json``: a resumed run trains more epochs."""
        if self.is_main:
            (self.folder / FINISHED_NAME).unlink(missing_ok=True)

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

    def discard(self) -> None:
        """Close, and remove the folders this run created: a start that failed leaves
        nothing behind. A folder that existed before (a resumed run's) is kept."""
        self.close()
        if self.created is None:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        # Parents it created go only while empty: another run may have started in them since.
        for parent in self.folder.absolute().parents:
            if not parent.is_relative_to(self.created.absolute()):
                break
            try:
                parent.rmdir()
            except OSError:
                break
        self.created = None

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
