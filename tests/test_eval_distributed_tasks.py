"""``itra-bench run`` under torchrun (2 gloo processes) on every kind of task: the demo suite,
an ELEVATER-format root, a COCO-format retrieval set, an MS MARCO subset and STS give the
results of one process, written once; a rank killed mid-encode leaves chunks that the rerun
resumes from, ending identical; a hung rank ends the job with a message naming it;
``--distribute jobs`` deals whole (model, task) jobs to the ranks with the same results."""

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
PLUGINS = ("--plugin", "itra_test_plugin", "--plugin", "itra_bench.tasks.coco",
           "--plugin", "itra_bench.tasks.msmarco")

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
    return [*PLUGINS, "--tasks", *tasks, "--data-root", data, "--workers", "0",
            "--no-progress", "--batch-size", "4", "--max-passages", "100",
            "--task-option", "query_block=4", "--task-option", "block_rows=32"]


def test_every_kind_of_task_gives_one_process_results_written_once(cli, tmp_path, data):
    tasks = ("demo", data / "tiny-elevater.yaml", "coco2017-retrieval", "msmarco-passage-dev",
             "stsb", data / "pets.yaml")
    one = cli("run", "--model", "pixel", *common(data, *tasks), "--output", tmp_path / "one",
              "--cache-dir", tmp_path / "c1")
    assert one.code == 0, one
    two = torchrun("--model", "pixel", *common(data, *tasks), "--output", tmp_path / "two",
                   "--cache-dir", tmp_path / "c2")
    assert two.returncode == 0, two.stderr[-4000:]
    single, double = records(tmp_path / "one"), records(tmp_path / "two")
    tasks_seen = {task for _, task, _ in single}
    assert {"tiny-elevater", "coco2017-retrieval", "msmarco-passage-dev", "stsb",
            "pets-lp", "digits-retrieval"} <= tasks_seen
    assert set(single) == set(double)
    for key, rec in single.items():
        assert double[key]["metrics"] == rec["metrics"], key
        assert double[key]["num_samples"] == rec["num_samples"], key
    assert {r["processes"] for r in double.values()} == {2}
    # The query blocks really were split: both ranks searched MS MARCO.
    ms = next(r for (_, t, _), r in double.items() if t == "msmarco-passage-dev")
    assert ms["details"]["search_processes"] == 2
    # Rank 0 alone wrote: the same files (results, prediction files); the cache holds the
    # same entries.
    files = written(tmp_path / "one")
    assert files == written(tmp_path / "two")
    assert sum(p.suffix == ".json" for p in files) >= len(single)
    entries = {p.name for p in (tmp_path / "c1").rglob("*.pt")}
    assert entries and entries == {p.name for p in (tmp_path / "c2").rglob("*.pt")}
    passages = [p.relative_to(tmp_path / "c1") for p in (tmp_path / "c1").rglob("embeddings.npy")]
    assert len(passages) == 1
    assert (tmp_path / "c1" / passages[0]).read_bytes() == \
        (tmp_path / "c2" / passages[0]).read_bytes()


def _cache_tensors(folder: Path) -> dict[str, dict]:
    return {p.name: torch.load(p, weights_only=True) for p in folder.rglob("*.pt")
            if ".chunks" not in str(p)}


def test_rank_killed_mid_encode_resumes_from_chunks_and_ends_identical(cli, tmp_path, data):
    args = [*common(data, data / "pets.yaml"), "--cache-chunk-rows", "8"]
    one = cli("run", "--model", "pixel", *args, "--output", tmp_path / "one",
              "--cache-dir", tmp_path / "c1")
    assert one.code == 0, one
    # Rank 1 dies (SIGKILL) before its 6th image batch. A chunk of 8 rows is 2 batches of 4,
    # one per rank: rank 1 encodes 1 batch of the 10 training images and 1 of each test
    # chunk, so whichever split comes first, complete chunks are on disk when it dies.
    killed = torchrun("--model", "pixel:kill-rank1-at6", *args, "--output", tmp_path / "two",
                      "--cache-dir", tmp_path / "c2")
    assert killed.returncode != 0
    assert "rank      : 1" in killed.stderr  # torchrun's summary names the rank that died
    assert not list((tmp_path / "two").rglob("*.json"))
    chunks = list((tmp_path / "c2").rglob("rows-8/*"))
    assert chunks, "the killed run left no complete chunk"
    resumed = torchrun("--model", "pixel", *args, "--output", tmp_path / "two",
                       "--cache-dir", tmp_path / "c2")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming the encoding at row" in resumed.stderr, resumed.stderr[-3000:]
    (rec_one,), (rec_two,) = records(tmp_path / "one").values(), records(tmp_path / "two").values()
    assert rec_two["metrics"] == rec_one["metrics"]
    first, second = _cache_tensors(tmp_path / "c1"), _cache_tensors(tmp_path / "c2")
    assert first.keys() == second.keys() and first
    for name, entry in first.items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, second[name][key]), (name, key)


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
