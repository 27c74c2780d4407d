"""Process-group set-up under ``torchrun`` and the one feature gather every loss relies on."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from itra_bench.context import resolve_device


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0, which writes logs and checkpoints."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> World:
    """Join the ``torchrun`` job when there is one (NCCL on GPU, gloo on CPU)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if size == 1:
        return World(device=resolved)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=size)
    return World(rank=rank, local_rank=local_rank, size=size, device=resolved)


class _GatherKeepLocalGrad(torch.autograd.Function):
    """All-gather along the batch; the backward pass sums every rank's gradient for this
    rank's slice, so each process's features receive the whole batch loss's gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows: (ctx.rank + 1) * ctx.rows]


def gather_batch(x: torch.Tensor, world: World) -> torch.Tensor:
    """The global batch of ``x`` (every rank's rows, in rank order), differentiable.

    Every rank then computes the loss on the whole global batch, so its value equals the
    single-process loss on that batch. In the backward pass rank ``r``'s rows receive the
    sum of all ranks' gradients (``world.size`` times the loss's gradient); DDP's average
    over ranks turns that into exactly the single-process gradient. Uses only all-gather
    and all-reduce, which gloo and NCCL both provide. Needs equal batch sizes on all ranks.
    """
    if world.size == 1:
        return x
    return _GatherKeepLocalGrad.apply(x)
