"""One DDP step of InfoNCE on a fixed global batch, run by ``torchrun --nproc-per-node N``.

Every rank builds the same tiny two-tower model (seeded), wraps it in
``DistributedDataParallel``, takes its rows ``r*B:(r+1)*B`` of a fixed global batch,
gathers both modalities' features, computes :class:`InfoNCE` on the global batch and runs
backward. Rank 0 writes every rank's loss and the (DDP-averaged) parameter gradients to
``OUT`` for ``tests/test_train_distributed.py`` to compare with one process on the whole
batch (:func:`reference`).

``--gather sum`` uses itra_train's :func:`gather_batch` (backward all-reduces);
``--gather nosum`` uses open_clip's default without ``gather_with_grad``: a plain
all-gather with this rank's own slice put back, so only local rows carry gradients. The
test expects the latter to give the wrong gradients (the check must be able to fail).
Each mode listed runs one step from a fresh copy of the model; ``OUT`` holds a dict keyed
by mode.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_gather_check.py
       OUT [--gather sum nosum] [--rows-per-rank B]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

SEED = 1234
IMAGE_DIM, TEXT_DIM, HIDDEN, EMBED = 12, 10, 16, 8
GLOBAL_ROWS = 16


class TwoTowers(nn.Module):
    """Two small MLP towers and a learnable temperature, shaped like ``ItraModel``'s output."""

    def __init__(self) -> None:
        super().__init__()
        self.image_tower = nn.Sequential(nn.Linear(IMAGE_DIM, HIDDEN), nn.Tanh(),
                                         nn.Linear(HIDDEN, EMBED))
        self.text_tower = nn.Sequential(nn.Linear(TEXT_DIM, HIDDEN), nn.Tanh(),
                                        nn.Linear(HIDDEN, EMBED))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_features": self.image_tower(images),
                "text_features": self.text_tower(texts),
                "logit_scale": self.logit_scale.exp()}


def build(global_rows: int = GLOBAL_ROWS) -> tuple[TwoTowers, torch.Tensor, torch.Tensor]:
    """The model and the global batch (image inputs, text inputs), identical on every call."""
    gen = torch.Generator().manual_seed(SEED)
    images = torch.randn(global_rows, IMAGE_DIM, generator=gen)
    texts = torch.randn(global_rows, TEXT_DIM, generator=gen)
    torch.manual_seed(SEED)
    return TwoTowers(), images, texts


def reference(global_rows: int = GLOBAL_ROWS) -> dict[str, object]:
    """Loss and gradients of one process on the whole global batch, without DDP."""
    from itra_bench.plugins.losses.alignment import InfoNCE

    model, images, texts = build(global_rows)
    out = model(images, texts)
    loss = InfoNCE()(out["image_features"], out["text_features"], out["logit_scale"])
    loss.backward()
    return {"loss": loss.detach(),
            "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters()}}


def _gather_nosum(x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``gather_features`` without ``gather_with_grad``: the other ranks'
    features are constants; this rank's own slice keeps its gradient (not summed)."""
    import torch.distributed as dist

    parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def _one_step(mode: str, world, rows: int) -> dict[str, object]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from itra_bench.plugins.losses.alignment import InfoNCE
    from itra_train.distributed import gather_batch

    model, images, texts = build(rows * world.size)
    ddp = DistributedDataParallel(model)
    mine = slice(world.rank * rows, (world.rank + 1) * rows)
    out = ddp(images[mine], texts[mine])
    gather = (lambda x: gather_batch(x, world)) if mode == "sum" else _gather_nosum
    loss = InfoNCE()(gather(out["image_features"]), gather(out["text_features"]),
                     out["logit_scale"])
    loss.backward()

    losses = [torch.zeros(()) for _ in range(world.size)]
    dist.all_gather(losses, loss.detach())
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    # DDP leaves the averaged gradients on every rank; keep every rank's, to check that.
    every: list[object] = [None] * world.size
    dist.all_gather_object(every, grads)
    return {"losses": torch.stack(losses), "grads": grads, "grads_by_rank": every}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", help="file rank 0 writes (torch.save of a dict keyed by mode)")
    parser.add_argument("--gather", nargs="+", choices=("sum", "nosum"), default=["sum"])
    parser.add_argument("--rows-per-rank", type=int, default=0)
    args = parser.parse_args()

    import torch.distributed as dist

    from itra_train.distributed import init_distributed

    torch.set_num_threads(1)
    world = init_distributed("cpu")
    if world.size < 2 or not dist.is_initialized():
        raise SystemExit("run me under torchrun with at least 2 processes")
    rows = args.rows_per_rank or GLOBAL_ROWS // world.size
    results = {mode: _one_step(mode, world, rows) for mode in args.gather}
    if world.is_main:
        torch.save({"world_size": world.size, "rows_per_rank": rows, **results}, args.out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
