"""``benchmarks/bench_wds_remote.py`` runs end to end on a few images (its figures are in
benchmarks/README.md), and what it times from the loopback server is the local split's
data: the same features and labels."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_the_remote_benchmark_runs_and_reads_what_the_local_files_hold(tmp_path, monkeypatch):
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_wds_remote

    threads = torch.get_num_threads()
    try:
        report = bench_wds_remote.main(
            ["--model", "tiny", "--images", "24", "--per-shard", "8", "--batch-size", "8",
             "--workers", "0", "--threads", "1", "--repeats", "1", "--dir", str(tmp_path),
             "--out", str(tmp_path / "r.json")])
    finally:
        # The benchmark sets torch's thread count for the process: later tests' float sums
        # (their order follows the threads) must not depend on this test having run.
        torch.set_num_threads(threads)
    assert report["features_max_abs_diff"] == 0 and report["same_targets"]
    remote = report["summary"]["variants"]["remote"]
    assert remote["fetch_s"] > 0 and report["summary"]["shard_bytes_fetched"] > 0
    assert (tmp_path / "r.json").is_file()
    sys.modules.pop("bench_wds_remote", None)
