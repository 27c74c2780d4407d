"""Run under torchrun (2+ gloo processes): shard + gather_rows restore every row in order,
and require_same refuses ranks started with different settings. Rank 0 writes a JSON report."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from itra_bench.distributed import gather_rows, init_distributed, require_same, shard
from itra_bench.errors import UserError


def main() -> None:
    world = init_distributed("cpu")
    report: dict[str, object] = {"size": world.size}
    restored = []
    for n in (0, 1, world.size - 1, 7, 1000):
        mine = shard(n, world)
        rows = torch.arange(n, dtype=torch.float32)[mine.start:mine.stop].reshape(-1, 1)
        rows = rows.repeat(1, 3)
        every = gather_rows(rows, world)
        restored.append(bool(torch.equal(every[:, 0], torch.arange(n, dtype=torch.float32))))
    report["restored"] = restored
    require_same({"model": "m", "tasks": ["a"]}, world)
    try:
        require_same({"model": "m", "tasks": ["a"], "data_root": f"/data{world.rank}"}, world)
        report["refused"] = ""
    except UserError as exc:
        report["refused"] = str(exc)
    if world.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
