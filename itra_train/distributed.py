"""The one feature gather every loss relies on; joining the job (torchrun or SLURM) is
itra-bench's (:mod:`itra_bench.distributed`), shared with evaluation."""

from __future__ import annotations

import torch
import torch.distributed as dist

from itra_bench import World, init_distributed

__all__ = ["World", "gather_batch", "init_distributed"]


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
