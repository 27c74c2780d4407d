"""Every built-in loss gives the single-process result under 2 gloo processes.

All built-in losses have a cross-sample term (similarity matrices, batch statistics, queues,
centres, k-means episodes, batch-norm in their heads), so each is only right under DDP if it
sees the global batch. One ``torchrun`` launch (``tests/helpers/ddp_losses_check.py``) runs
:data:`STEPS` SGD steps of each loss on fixed global batches, every rank on its half of the rows
with the features and prototype outputs gathered by ``gather_batch``; here the same steps run in
one process on the whole batches and must give the same per-step loss values (identical on both
ranks), the same final model parameters and the same final loss parameters and buffers. The
same losses computed on the local half without gathering differ, so the check can fail.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ddp_losses_check import GLOBAL_ROWS, LOSS_OPTIONS, PROTOTYPES, STEPS, build, train

HELPERS = Path(__file__).parent / "helpers"
NPROC = 2
LOCAL = ("vicreg", "seed")  # the negative control: computed on the local rows, no gather
# Loss values are O(1-25) float32 sums of O(B^2..B^3) terms; the rows come from a half-batch
# forward on each rank and a whole-batch one here, which may round differently in the last bit.
LOSS_TOL = {"rtol": 1e-5, "atol": 1e-6}
STATE_TOL = {"rtol": 1e-5, "atol": 1e-6}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch was built without torch.distributed / gloo"),
]


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp_losses") / "losses.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    # "--" ends torchrun's own options (it would take "--local" for an abbreviation of its own).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={NPROC}", "--", str(HELPERS / "ddp_losses_check.py"), str(out),
           "--losses", *LOSS_OPTIONS, "--local", *LOCAL]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    result = torch.load(out, weights_only=False)
    assert result["world_size"] == NPROC
    return result


@functools.cache
def single(name: str) -> dict:
    """The same steps in one process on the whole global batches."""
    return train(name)


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, **tol: float) -> None:
    torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{what}: {m}")


def test_every_builtin_loss_is_checked():
    from itra_bench.registry import load_registry

    builtin = {name for name, provided in load_registry().losses.items()
               if provided.item.factory.__module__.startswith("itra_bench.plugins.losses")}
    assert builtin == set(LOSS_OPTIONS)


@pytest.mark.parametrize("name", list(LOSS_OPTIONS))
def test_distributed_loss_equals_single_process(distributed, name):
    got, ref = distributed["gather"][name], single(name)

    # Every rank computes the loss on the same gathered global batch: bit-identical values.
    by_rank = got["by_rank"]
    assert by_rank.shape == (NPROC, STEPS)
    assert torch.equal(by_rank, by_rank[:1].expand(NPROC, STEPS)), by_rank
    assert torch.equal(by_rank[0], got["loss"])

    _close(got["loss"], ref["loss"], f"{name}: per-step loss", **LOSS_TOL)
    for step, (terms, expected) in enumerate(zip(got["terms"], ref["terms"], strict=True)):
        assert terms.keys() == expected.keys()
        for term, value in expected.items():
            _close(terms[term], value, f"{name}: step {step + 1} term {term}", **LOSS_TOL)

    # The trajectory: the model after STEPS steps, and the loss's parameters and buffers.
    assert got["model"].keys() == ref["model"].keys()
    for key, value in ref["model"].items():
        _close(got["model"][key], value, f"{name}: model {key}", **STATE_TOL)
    assert got["loss_state"].keys() == ref["loss_state"].keys()
    for key, value in ref["loss_state"].items():
        _close(got["loss_state"][key], value, f"{name}: loss state {key}", **STATE_TOL)

    # Loss parameters are outside DDP and buffers are updated from the batch: every rank must
    # hold exactly rank 0's (else the processes drift apart).
    for rank, state in enumerate(got["states_by_rank"]):
        for part in ("model", "loss_state"):
            for key, value in state[part].items():
                assert torch.equal(value, got[part][key]), (name, rank, part, key)


def test_the_state_was_exercised():
    """The steps reach what makes these losses stateful, so the comparison covers it."""
    queue_rows = STEPS * GLOBAL_ROWS
    for name in ("seed", "compress-1q", "compress-2q"):
        state = single(name)["loss_state"]
        size = LOSS_OPTIONS[name]["queue_size"]
        assert queue_rows > size  # the queue wrapped around
        pointers = [v for k, v in state.items() if k.endswith("ptr")]
        assert pointers and all(int(p) == queue_rows % size for p in pointers), (name, state)

    protoclip = single("protoclip")
    assert int(protoclip["loss_state"]["episodes"]) == STEPS * GLOBAL_ROWS // \
        LOSS_OPTIONS["protoclip"]["episode_size"] >= 2
    prototype_terms = torch.stack([t["prototype"] for t in protoclip["terms"]])
    assert prototype_terms[0] == 0 and (prototype_terms[1:] > 0).all(), prototype_terms

    assert single("dino")["loss_state"]["center"].abs().min() > 0
    assert not torch.equal(single("protocpc")["loss_state"]["prior"], torch.ones(PROTOTYPES))

    for name in ("protoclip", "simreg"):  # heads with batch-norm, trained by the loss
        state = single(name)["loss_state"]
        tracked = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
        assert tracked and all(int(t) == STEPS for t in tracked), name
        _, fresh = build(name)
        changed = [k for k, v in fresh.state_dict().items()
                   if v.is_floating_point() and not torch.equal(v, state[k])]
        assert any(k.endswith("weight") for k in changed), (name, changed)


@pytest.mark.parametrize("name", LOCAL)
def test_loss_on_the_local_batch_differs(distributed, name):
    """The check has teeth: the same steps without the gather (each rank's loss on its own
    rows) give other loss values, different on each rank, and other state."""
    wrong, ref = distributed["local"][name], single(name)
    assert not torch.equal(wrong["by_rank"][0], wrong["by_rank"][1])
    for step in range(STEPS):
        with pytest.raises(AssertionError):
            _close(wrong["loss"][step], ref["loss"][step], name, **LOSS_TOL)
    with pytest.raises(AssertionError):
        for key, value in {**ref["model"], **ref["loss_state"]}.items():
            actual = wrong["model"].get(key, wrong["loss_state"].get(key))
            _close(actual, value, f"{name}: {key}", **STATE_TOL)
    if name == "seed":  # the queue holds rank 0's rows only
        with pytest.raises(AssertionError):
            _close(wrong["loss_state"]["queue.features"], ref["loss_state"]["queue.features"],
                   name, **STATE_TOL)
