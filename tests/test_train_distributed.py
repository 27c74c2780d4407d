"""Distributed training equals single-process training on the same global batch.

Two gloo processes under ``torchrun`` on the CPU:

* ``gather_batch`` + InfoNCE + DDP give the single-process loss (identical on every rank)
  and gradients; a gather that does not sum gradients in its backward pass (open_clip's
  default without ``gather_with_grad``) does not, so the check can fail.
* ``itra-train`` with 2 processes at ``--batch-size B`` follows the same trajectory (per-step
  losses, final weights) as 1 process at ``--batch-size 2B``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ddp_gather_check import reference
from train_data import assert_same_weights

HELPERS = Path(__file__).parent / "helpers"
NPROC = 2

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch was built without torch.distributed / gloo")


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd: list[str], timeout: float = 180) -> None:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
        f"{proc.stderr[-4000:]}")


def _torchrun(*args: str, timeout: float = 180) -> None:
    # "--" ends torchrun's own options: its parser would otherwise take our "--logs" for an
    # ambiguous abbreviation of its "--logs-specs".
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
          f"--nproc-per-node={NPROC}", *args], timeout)


# -- gather_batch: one DDP step ------------------------------------------------------------

@pytest.fixture(scope="module")
def ddp_step(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp_gather") / "grads.pt"
    _torchrun("--", str(HELPERS / "ddp_gather_check.py"), str(out), "--gather", "sum", "nosum")
    result = torch.load(out, weights_only=False)
    assert result["world_size"] == NPROC
    return result


@pytest.fixture(scope="module")
def single() -> dict:
    return reference()


@pytest.mark.slow
def test_distributed_infonce_loss_equals_single_process(ddp_step, single):
    losses = ddp_step["sum"]["losses"]
    assert losses.shape == (NPROC,)
    # Every rank computes the loss on the same gathered global batch: bit-identical values.
    assert torch.equal(losses, losses[:1].expand(NPROC)), losses
    torch.testing.assert_close(losses[0], single["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_distributed_gradients_equal_single_process(ddp_step, single):
    grads = ddp_step["sum"]["grads"]
    assert grads.keys() == single["grads"].keys()
    for name, expected in single["grads"].items():
        assert expected.abs().max() > 0, name
        torch.testing.assert_close(grads[name], expected, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")
    # DDP leaves the same averaged gradients on every rank.
    for rank, other in enumerate(ddp_step["sum"]["grads_by_rank"]):
        for name, value in other.items():
            assert torch.equal(value, grads[name]), (rank, name)


@pytest.mark.slow
def test_gather_without_summed_backward_gets_wrong_gradients(ddp_step, single):
    """The check has teeth: without the backward all-reduce each rank's features only get
    their own rank's share of the gradient, so after DDP's average the towers' gradients
    are 1/N of the true ones (the loss value and the temperature's gradient are still
    right, which is why a loss-only check would miss this)."""
    wrong = ddp_step["nosum"]
    torch.testing.assert_close(wrong["losses"][0], single["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(wrong["grads"]["logit_scale"], single["grads"]["logit_scale"],
                               rtol=1e-5, atol=1e-6)
    towers = [n for n in single["grads"] if n != "logit_scale"]
    assert towers
    for name in towers:
        with pytest.raises(AssertionError):
            torch.testing.assert_close(wrong["grads"][name], single["grads"][name],
                                       rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(wrong["grads"][name] * NPROC, single["grads"][name],
                                   rtol=1e-5, atol=1e-6)


# -- itra-train end to end -----------------------------------------------------------------

ROWS, BATCH, EPOCHS, LR = 256, 32, 2, 1e-3
STEP_LINE = re.compile(r"Train Epoch: (\d+) \[(\d+)/(\d+) \(\d+%\)\] loss: ([-\d.naif]+)")


def _subset_csv(folder: Path) -> Path:
    """``ROWS`` rows spread over the digits CSV (every 7th: all digits, several phrasings)."""
    from itra_train.demo_data import write_digits_csv

    lines = write_digits_csv(folder).read_text(encoding="utf-8").splitlines()
    rows = lines[1:][::7][:ROWS]
    assert len(rows) == ROWS
    path = folder / "subset.csv"
    path.write_text("\n".join([lines[0], *rows]) + "\n", encoding="utf-8")
    return path


def _step_losses(run: Path) -> list[tuple[int, int, float]]:
    text = (run / "out.log").read_text(encoding="utf-8")
    return [(int(e), int(done), float(loss)) for e, done, _, loss in STEP_LINE.findall(text)]


def _tensorboard_losses(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


@pytest.mark.slow
def test_itra_train_two_processes_match_one_with_double_batch(tmp_path):
    csv = _subset_csv(tmp_path / "data")
    logs = tmp_path / "logs"
    common = ["--train-data", str(csv), "--image-tower", "openclip:itra-demo", "--text-tower",
              "openclip:itra-demo", "--epochs", str(EPOCHS), "--lr", str(LR), "--warmup", "1",
              "--workers", "0", "--precision", "fp32", "--device", "cpu", "--seed", "7",
              "--log-every-n-steps", "1", "--logs", str(logs), "--no-progress"]
    _run([sys.executable, "-m", "itra_train.cli", *common, "--batch-size", str(2 * BATCH),
          "--name", "one"])
    _torchrun("-m", "--", "itra_train.cli", *common, "--batch-size", str(BATCH),
              "--name", "two")
    one, two = logs / "one", logs / "two"
    steps = ROWS // (2 * BATCH)

    # Per-step losses: the log lines (4 decimals) and TensorBoard's float32 values.
    logged = _step_losses(one), _step_losses(two)
    assert len(logged[0]) == steps * EPOCHS, logged[0]
    assert [s[:2] for s in logged[0]] == [s[:2] for s in logged[1]]
    for (_, _, a), (_, _, b) in zip(*logged, strict=True):
        assert abs(a - b) <= 1.5e-4, logged
    board = _tensorboard_losses(one), _tensorboard_losses(two)
    assert [s for s, _ in board[0]] == [s for s, _ in board[1]] == \
        list(range(1, steps * EPOCHS + 1))
    torch.testing.assert_close(torch.tensor([v for _, v in board[1]]),
                               torch.tensor([v for _, v in board[0]]), rtol=1e-4, atol=1e-5)
    assert len({round(v, 3) for _, v in board[0]}) > 1, "the loss never changed"

    results = [[json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
               for run in (one, two)]
    assert [r["step"] for r in results[0]] == [r["step"] for r in results[1]] == \
        [steps * (e + 1) for e in range(EPOCHS)]
    for a, b in zip(*results, strict=True):
        for key in ("train_loss", "train_loss_last", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (key, a, b)

    # The weights after every epoch.
    for epoch in range(1, EPOCHS + 1):
        ckpts = [torch.load(run / "checkpoints" / f"epoch_{epoch}.pt", weights_only=True)
                 for run in (one, two)]
        assert ckpts[0]["step"] == ckpts[1]["step"] == steps * epoch
        assert_same_weights(ckpts[0]["model"], ckpts[1]["model"], LR, steps * epoch)


@pytest.mark.slow
def test_eval_tasks_and_watch_shard_across_ranks_with_one_process_numbers(tmp_path, cli):
    """``--eval-tasks`` during 2-process training and ``itra-bench watch`` under torchrun
    take the sharded evaluation path; their numbers equal a one-process ``itra-bench run``
    of the same checkpoint, and rank 0 alone writes."""
    csv = _subset_csv(tmp_path / "data")
    logs = tmp_path / "logs"
    _torchrun("-m", "--", "itra_train.cli", "--train-data", str(csv), "--image-tower",
              "openclip:itra-demo", "--text-tower", "openclip:itra-demo", "--epochs", "1",
              "--lr", str(LR), "--warmup", "1", "--workers", "0", "--device", "cpu", "--seed", "7",
              "--logs", str(logs), "--no-progress", "--batch-size", str(BATCH),
              "--name", "two", "--eval-tasks", "digits-zeroshot", timeout=300)
    run = logs / "two"
    during = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(during) == 1
    in_training = during[0]["eval/digits-zeroshot/zeroshot/acc1"]
    (stored,) = list((run / "eval").rglob("*.json"))
    assert json.loads(stored.read_text())["processes"] == 2

    checkpoint = run / "checkpoints" / "epoch_1.pt"
    one = cli("run", "--model", checkpoint, "--tasks", "digits-zeroshot", "--output",
              tmp_path / "one", "--workers", "0", "--no-progress", "--no-cache")
    assert one.code == 0, one
    alone = json.loads(next((tmp_path / "one").rglob("*.json")).read_text())
    assert alone["main_score_value"] == pytest.approx(in_training, abs=1e-9)

    _torchrun("-m", "--", "itra_bench.cli", "watch", str(run), "--tasks", "digits-zeroshot",
              "--once", "--workers", "0", timeout=300)
    lines = (run / "evaluation_metrics_all.csv").read_text().splitlines()
    assert len(lines) == 2
    assert float(lines[1].split(",")[2]) == pytest.approx(alone["main_score_value"], abs=1e-6)
    (watched,) = list((run / "watch-results").rglob("*.json"))
    assert json.loads(watched.read_text())["processes"] == 2
