"""A torchrun launcher killed (``kill -9``) mid-run: its ranks notice within seconds and stop,
instead of running on unsupervised; what they completed is kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
from test_resumable_encoding import make_pets

HELPERS = Path(__file__).parent / "helpers"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch was built without torch.distributed / gloo"),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc"),
]


def parent_of(pid: int) -> int | None:
    """The parent pid of a live process, None for one gone (or a zombie: it ran to its end)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return None if state in "ZX" else int(ppid)


def children_of(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and parent_of(int(p.name)) == pid]


def test_killing_the_launcher_stops_every_rank_within_seconds(tmp_path):
    data = make_pets(tmp_path / "data")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    log = tmp_path / "stderr.txt"
    cache = tmp_path / "cache"
    # Rank 1 stalls in its 2nd image batch (sleeping in Python) and rank 0 then waits for it
    # in the next gather (blocked in gloo): both ranks live on until something stops them.
    with open(log, "w") as stderr:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
             "-m", "itra_bench.cli", "run", "--model", "pixel:hang-rank1-at2",
             "--plugin", "itra_test_plugin", "--tasks", str(data / "t.yaml"),
             "--data-root", str(data), "--output", str(tmp_path / "out"),
             "--cache-dir", str(cache), "--batch-size", "4", "--cache-chunk-rows", "8",
             "--workers", "0", "--no-progress"],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 240
        # The first chunk is written once both ranks encoded a batch: both are at work.
        while not list(cache.rglob("rows-8/*.pt")):
            assert launcher.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        ranks = children_of(launcher.pid)
        assert len(ranks) == 2, ranks
        launcher.kill()
        launcher.wait()
        killed = time.monotonic()
        while any(parent_of(pid) is not None for pid in ranks) and \
                time.monotonic() - killed < 10:
            time.sleep(0.05)
        took = time.monotonic() - killed
        print(f"ranks stopped {took:.2f} s after the launcher was killed")
        assert took < 10, f"ranks still running 10 s after the launcher died: {ranks}"
        lines = log.read_text()
        for rank in (0, 1):
            assert f"rank {rank}: the launcher" in lines, lines[-3000:]
        assert not list((tmp_path / "out").rglob("*.json"))
    finally:
        for pid in ranks:
            if parent_of(pid) is not None:
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
