"""``itra-bench run`` under torchrun (2 gloo processes) on every kind of task: the demo suite,
an ELEVATER-format root, a COCO-format retrieval set, an MS MARCO subset and STS give the
results of one process, written once, and its features bit for bit (at the same thread count:
the one process runs on one thread, as torchrun's ranks do); a rank killed mid-encode leaves
chunks that the rerun resumes from, ending identical; a hung rank ends the job with a message
naming it; ``--distribute jobs`` deals whole (model, task) jobs to the ranks with the same
results (compared with a one-process run on all cores: metrics only)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from elevater_data import write_dataset
from PIL import Image
from test_coco_snli_ve import write_coco
from test_msmarco import make_msmarco
from text_data import sts_pairs, write_stsbenchmark

from itra_bench.results import iter_records
from itra_bench.vision_benchmark.cards import load_card

HELPERS = Path(__file__).parent / "helpers"
PLUGINS = ("--plugin", "itra_test_plugin", "--plugin", "itra_bench.tasks.coco.plugin",
           "--plugin", "itra_bench.tasks.msmarco.plugin")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch was built without torch.distributed / gloo"),
]

CARD = """\
name: tiny-elevater
protocol: elevater
type: multiclass
num_classes: 3
metric: accuracy
format: index
root: tiny-elevater
splits:
  train: {index: train.txt, files: [train.zip], num_images: 15}
  test: {index: test.txt, files: [test.zip], num_images: 15}
source: "synthetic: tests/helpers/elevater_data.py"
classnames: [red thing, green thing, blue thing]
templates: ['a photo of a {}.', 'a drawing of a {}.']
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A data root with every kind of task's files, and an ELEVATER card file beside it."""
    root = tmp_path_factory.mktemp("dist-data")
    card = root / "tiny-elevater.yaml"
    card.write_text(CARD)
    write_dataset(load_card(card), root, per_class=5)
    write_coco(root)
    make_msmarco(root, n_passages=150, n_queries=24)
    write_stsbenchmark(root / "STS" / "STSBenchmark" / "sts-test.csv", sts_pairs(25, seed=10))
    # An ImageFolder split of 47 images (odd, so shards and chunks are uneven).
    for split, n in (("train", 5), ("test", 47)):
        for c, cls in enumerate(("cat", "dog")):
            folder = root / "pets" / split / cls
            folder.mkdir(parents=True)
            for i in range(n if split == "train" or c == 0 else 0):
                Image.new("RGB", (12, 12), (120 * c, 5 * i % 255, 200 - 90 * c)).save(
                    folder / f"{i}.png")
    (root / "pets" / "test" / "dog" / "0.png").write_bytes(
        (root / "pets" / "train" / "dog" / "0.png").read_bytes())
    (root / "pets.yaml").write_text("name: pets-lp\nprotocol: linear_probe\nroot: pets\n")
    return root


def records(out: Path) -> dict[tuple[str, str, str], dict]:
    return {(r["model"]["name"], r["task"], r["variant"]): r for _, r in iter_records(out)}


def written(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


def torchrun(*args: object, nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HELPERS), str(HELPERS.parent),
                                           os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={nproc}", "-m", "itra_bench.cli", "run", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=timeout)


def common(data: Path, *tasks: str) -> list:
    # Chunks of 8 rows in batches of 4: every split is gathered chunk by chunk, and a
    # killed run leaves many complete chunks behind.
    return [*PLUGINS, "--tasks", *tasks, "--data-root", data, "--workers", "0",
            "--no-progress", "--batch-size", "4", "--cache-chunk-rows", "8",
            "--max-passages", "100", "--task-option", "query_block=4",
            "--task-option", "block_rows=32"]


def every_task(data: Path) -> tuple:
    return ("demo", data / "tiny-elevater.yaml", "coco2017-retrieval", "msmarco-passage-dev",
            "stsb", data / "pets.yaml")


@pytest.fixture(scope="module")
def single(tmp_path_factory, data) -> Path:
    """One process's run of every task: results in ``out/``, features in ``cache/``. On one
    thread, like each rank under torchrun (``OMP_NUM_THREADS=1``): features are bit-identical
    only at equal thread counts (a product split over 2 threads may round differently)."""
    from itra_bench.cli import main
    from itra_bench.threads import torch_threads

    folder = tmp_path_factory.mktemp("one-process")
    args = ["run", "--model", "pixel", *common(data, *every_task(data)),
            "--output", folder / "out", "--cache-dir", folder / "cache"]
    with torch_threads(1):
        assert main([str(a) for a in args]) == 0
    return folder


def assert_same_results(single: Path, out: Path) -> dict:
    one, two = records(single / "out"), records(out)
    assert {task for _, task, _ in one} >= {
        "tiny-elevater", "coco2017-retrieval", "msmarco-passage-dev", "stsb", "pets-lp",
        "digits-retrieval"}
    assert set(one) == set(two)
    for key, rec in one.items():
        assert two[key]["metrics"] == rec["metrics"], key
        assert two[key]["num_samples"] == rec["num_samples"], key
    # Rank 0 alone wrote: the same files (results, prediction files).
    assert written(single / "out") == written(out)
    return two


def _cache_tensors(folder: Path) -> dict[str, dict]:
    return {p.name: torch.load(p, weights_only=True) for p in folder.rglob("*.pt")
            if ".chunks" not in str(p)}


def assert_same_cache(first: Path, second: Path) -> None:
    """The same feature cache entries, bit for bit, and the same passage store (both runs at
    one thread)."""
    a, b = _cache_tensors(first), _cache_tensors(second)
    assert a.keys() == b.keys() and a
    for name, entry in a.items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[name][key]), (name, key)
    stores = [p.relative_to(first) for p in first.rglob("embeddings.npy")]
    assert len(stores) == 1
    assert (first / stores[0]).read_bytes() == (second / stores[0]).read_bytes()
    assert not list(second.rglob("*.chunks/*/*")), "chunks left behind"


def test_every_kind_of_task_gives_one_process_results_written_once(tmp_path, data, single):
    two = torchrun("--model", "pixel", *common(data, *every_task(data)),
                   "--output", tmp_path / "two", "--cache-dir", tmp_path / "c2")
    assert two.returncode == 0, two.stderr[-4000:]
    double = assert_same_results(single, tmp_path / "two")
    assert {r["processes"] for r in double.values()} == {2}
    # The query blocks really were split: both ranks searched MS MARCO.
    ms = next(r for (_, t, _), r in double.items() if t == "msmarco-passage-dev")
    assert ms["details"]["search_processes"] == 2
    assert_same_cache(single / "cache", tmp_path / "c2")


def test_rank_killed_mid_encode_resumes_from_chunks_and_ends_identical(tmp_path, data, single):
    args = [*common(data, *every_task(data)), "--output", tmp_path / "two",
            "--cache-dir", tmp_path / "c2"]
    # Rank 1 dies (SIGKILL, like a lost node) before its 6th image batch: each chunk of 8
    # rows is 2 batches of 4, one per rank, so 5 complete chunks of the first split are on
    # disk when it dies.
    killed = torchrun("--model", "pixel:kill-rank1-at6", *args)
    assert killed.returncode != 0
    assert "rank      : 1" in killed.stderr  # torchrun's summary names the rank that died
    assert not list((tmp_path / "two").rglob("*.json"))
    assert len(list((tmp_path / "c2").rglob("rows-8/*"))) >= 4, "no complete chunk kept"
    resumed = torchrun("--model", "pixel", *args)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming the encoding at row 40" in resumed.stderr, resumed.stderr[-3000:]
    assert_same_results(single, tmp_path / "two")
    assert_same_cache(single / "cache", tmp_path / "c2")


def test_hung_rank_ends_the_job_naming_it(tmp_path, data):
    started = time.monotonic()
    hung = torchrun("--model", "pixel:hang-rank1-at2", *common(data, data / "pets.yaml"),
                    "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
                    "--dist-timeout", "8", timeout=300)
    assert hung.returncode != 0
    assert time.monotonic() - started < 240
    assert "error: rank 0 gave up waiting" in hung.stderr, hung.stderr[-3000:]
    assert "rank 1 (last at step" in hung.stderr and "did not arrive" in hung.stderr
    assert "--dist-timeout" in hung.stderr


def test_distribute_jobs_spreads_the_model_task_grid(cli, tmp_path, data):
    tasks = ("demo", data / "tiny-elevater.yaml", "stsb")
    models = ("--model", "pixel", "--model", "pixel:dim16")
    one = cli("run", *models, *common(data, *tasks), "--output", tmp_path / "one",
              "--cache-dir", tmp_path / "c1")
    assert one.code == 0, one
    two = torchrun(*models, *common(data, *tasks), "--output", tmp_path / "two",
                   "--cache-dir", tmp_path / "c2", "--distribute", "jobs")
    assert two.returncode == 0, two.stderr[-4000:]
    single, double = records(tmp_path / "one"), records(tmp_path / "two")
    assert set(single) == set(double) and len({m for m, _, _ in single}) == 2
    for key, rec in single.items():
        assert double[key]["metrics"] == rec["metrics"], key
    assert written(tmp_path / "one") == written(tmp_path / "two")
    # Both ranks ran jobs, and rank 0 printed the leaderboard of the whole grid.
    assert "rank 0 of 2" in two.stderr
    assert "pixel:dim16" in two.stdout and "leaderboard" in two.stdout.lower()
