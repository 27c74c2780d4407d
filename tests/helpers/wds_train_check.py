"""``itra-train`` recording the sample ids each rank trains on, for the webdataset tests.

Usage (under torchrun or alone): ``wds_train_check.py OUT_DIR CRASH_EPOCH -- ITRA_TRAIN_ARGS``.
Writes ``OUT_DIR/rank{r}_epoch{e}.json`` (the ids of every batch of epoch e, in order);
with ``CRASH_EPOCH`` >= 0 the run is interrupted (as by Ctrl-C) when that epoch starts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from itra_train.cli import main
from itra_train.trainer import Trainer

#: The trainer's own methods, wrapped afresh by every :func:`install`.
_ORIGINAL = Trainer._micro_batches, Trainer.train_one_epoch


def install(out: Path, crash_epoch: int, set_attr=setattr) -> None:
    """Wrap the trainer so each epoch's sample ids are written to ``out`` (``set_attr``:
    pytest's ``monkeypatch.setattr`` in a test, so the wrappers are undone after it)."""
    seen: list[int] = []
    micro_batches, one_epoch = _ORIGINAL

    def recording(self):
        for group in micro_batches(self):
            seen.extend(int(i) for batch in group for i in batch.indices)
            yield group

    def epoch(self, e):
        if e == crash_epoch:
            raise KeyboardInterrupt
        seen.clear()
        record = one_epoch(self, e)
        rank = int(os.environ.get("RANK", "0"))
        (out / f"rank{rank}_epoch{e}.json").write_text(json.dumps(seen))
        return record

    set_attr(Trainer, "_micro_batches", recording)
    set_attr(Trainer, "train_one_epoch", epoch)


if __name__ == "__main__":
    out_dir, crash, sep, *args = sys.argv[1:]
    assert sep == "--"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    install(Path(out_dir), int(crash))
    sys.exit(main(args))
