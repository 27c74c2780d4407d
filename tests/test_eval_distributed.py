"""Evaluation's distributed building blocks: disjoint shards, an ordered gather of uneven
parts, refusal of ranks started with different settings, torchrun and SLURM environments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from itra_bench.distributed import World, job_environment, shard
from itra_bench.errors import UserError

HELPERS = Path(__file__).parent / "helpers"


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 1001])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_are_disjoint_and_cover_every_row_once(n, size):
    parts = [shard(n, World(rank=r, size=size)) for r in range(size)]
    assert [i for p in parts for i in p] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_job_environment_of_torchrun_and_slurm():
    assert job_environment({}) is None
    assert job_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert job_environment({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == (2, 0, 4)
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
             "MASTER_ADDR": "node01", "MASTER_PORT": "29500"}
    assert job_environment(slurm) == (5, 1, 8)
    del slurm["MASTER_ADDR"]
    with pytest.raises(UserError, match="MASTER_ADDR"):
        job_environment(slurm)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch was built without torch.distributed / gloo")
def test_gather_restores_order_and_disagreeing_ranks_are_refused(tmp_path):
    out = tmp_path / "report.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=3", str(HELPERS / "dist_collectives_check.py"),
                           str(out)], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["size"] == 3 and all(report["restored"])
    assert "rank 1 differs from rank 0 in data_root" in report["refused"]


def _records(out: Path) -> dict[tuple[str, str], dict]:
    from itra_bench.results import iter_records

    return {(r["task"], r["variant"]): r for _, r in iter_records(out)}


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch was built without torch.distributed / gloo")
def test_two_processes_give_the_results_of_one(cli, tmp_path):
    from PIL import Image

    # An ImageFolder task beside the demo suite: odd split sizes, so shards are uneven.
    for split, n in (("train", 7), ("test", 5)):
        for c, cls in enumerate(("cat", "dog", "emu")):
            folder = tmp_path / "data" / "pets" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 12), (80 * c, 17 * i, 200 - 40 * c)).save(
                    folder / f"{i}.png")
    task = tmp_path / "pets.yaml"
    task.write_text("name: pets-lp\nprotocol: linear_probe\nroot: pets\n")
    common = ["--model", "pixel", "--plugin", "itra_test_plugin", "--tasks", "demo",
              str(task), "--data-root", str(tmp_path / "data"), "--workers", "0",
              "--no-progress", "--batch-size", "16"]
    # The one process uses all cores, each rank one thread (OMP_NUM_THREADS=1): features may
    # differ in their last bits (bit-identity needs equal thread counts, as in
    # test_eval_distributed_tasks.py), so this compares metrics, which must not move.
    one = cli("run", *common, "--output", tmp_path / "one", "--cache-dir", tmp_path / "c1")
    assert one.code == 0, one
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "itra_bench.cli", "run", *common, "--output", str(tmp_path / "two"),
         "--cache-dir", str(tmp_path / "c2")],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    single, double = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert set(single) == set(double) and len(single) == 6
    for key, rec in single.items():
        assert double[key]["metrics"] == rec["metrics"], key
        assert double[key]["num_samples"] == rec["num_samples"]
    # Rank 0 alone wrote: one file per result, and the cache holds the same entries.
    assert len(list((tmp_path / "two").rglob("*.json"))) == len(single)
    entries = {p.name for p in (tmp_path / "c1").rglob("*.pt")}
    assert entries and entries == {p.name for p in (tmp_path / "c2").rglob("*.pt")}


def test_launcher_watch_has_ended_before_the_interpreter_finalizes():
    # A daemon thread still alive when the interpreter finalizes is ended by pthread_exit
    # there; next to torch's C++ teardown that aborted a rank after its work was done
    # ("terminate called without an active exception", seen twice in CI). The check is
    # registered first, so it runs last among the exit handlers.
    script = (
        "import atexit, threading\n"
        "def report():\n"
        "    alive = [t.name for t in threading.enumerate()\n"
        "             if t.name == 'itra-bench launcher watch' and t.is_alive()]\n"
        "    print('watching at exit:', alive, flush=True)\n"
        "atexit.register(report)\n"
        "from itra_bench.distributed import watch_launcher\n"
        "watch_launcher(0)\n"
        "assert any(t.name == 'itra-bench launcher watch' for t in threading.enumerate())\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "watching at exit: []" in proc.stdout, proc.stdout
