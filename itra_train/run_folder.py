"""The run folder as ITRA users know it: ``<logs>/<name>/`` with ``checkpoints/``,
``out.log``, ``params.txt``, ``results.jsonl`` and ``tensorboard/``. Only rank 0 writes."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from yacs.config import CfgNode

LOGGER_NAME = "itra_train"


class RunFolder:
    """Writers for one run's folder; on ranks other than 0 every write is a no-op."""

    def __init__(self, folder: Path, is_main: bool) -> None:
        self.folder = folder
        self.is_main = is_main
        self._tb: Any = None
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
        """Flush and close the TensorBoard writer and the log file."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        for handler in list(self.log.handlers):
            self.log.removeHandler(handler)
            handler.close()
