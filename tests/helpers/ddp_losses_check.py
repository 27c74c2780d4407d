"""Every built-in loss for a few DDP steps on fixed global batches, run by ``torchrun``.

For each loss (all of them have a cross-sample term: similarity matrices, batch statistics,
queues, centres, k-means episodes, batch-norm in their heads) every rank builds the same tiny
two-tower model with a shared prototype layer (seeded) and the loss from the registry (seeded,
small options), wraps the model in ``DistributedDataParallel`` and runs :data:`STEPS` steps.
Each step: forward the rank's rows ``r*B:(r+1)*B`` of the step's fixed global batch, gather the
features and prototype outputs with itra_train's :func:`gather_batch`, compute the loss on the
global batch, backward, plain SGD on the model's and the loss's parameters. Rank 0 writes
every step's loss (and terms, and every rank's loss), the final model parameters and the final
loss state (parameters and buffers), plus every rank's final state, to ``OUT`` for
``tests/test_losses_distributed.py`` to compare with :func:`train` in one process on the whole
global batch.

``--local NAME ...`` also runs those losses with ``mode="local"``: each rank computes the loss
on its own rows only, without gathering (what a loss would see if the trainer forgot to gather);
the test expects these to differ from the single-process run (the check must be able to fail).

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_losses_check.py
       OUT [--losses NAME ...] [--local NAME ...]
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import nn

SEED = 4321
IMAGE_DIM, TEXT_DIM, HIDDEN, EMBED, PROTOTYPES = 12, 10, 16, 8, 4
GLOBAL_ROWS, STEPS, LR = 8, 3, 0.1

#: Constructor options per loss, small enough that the state is exercised within STEPS steps:
#: queues of 20 rows wrap around in the third step (3 x 8 rows); ProtoCLIP's episode equals the
#: global batch, so k-means runs after every step and the prototype term is active from the
#: second step on (and the episode boundaries do not depend on how rows are split).
LOSS_OPTIONS: dict[str, dict[str, Any]] = {
    "infonce": {},
    "protoclip": {"episode_size": GLOBAL_ROWS, "num_prototypes": PROTOTYPES, "kmeans_iters": 5,
                  "projection_dim": 6, "projection_hidden_dim": 12},
    "vicreg": {},
    "barlowtwins": {},
    "dino": {},
    "rkd": {},
    "seed": {"queue_size": 20},
    "compress-1q": {"queue_size": 20},
    "compress-2q": {"queue_size": 20},
    "protocpc": {},
    "simreg": {"hidden_dim": 12},
}


class TwoTowers(nn.Module):
    """Two small MLP towers, a learnable temperature and one prototype layer shared by both
    sides (as ``ItraModel`` with ``--prototypes K``); returns the trainer's output keys."""

    def __init__(self) -> None:
        from itra_train.heads import PrototypeLayer

        super().__init__()
        self.image_tower = nn.Sequential(nn.Linear(IMAGE_DIM, HIDDEN), nn.Tanh(),
                                         nn.Linear(HIDDEN, EMBED))
        self.text_tower = nn.Sequential(nn.Linear(TEXT_DIM, HIDDEN), nn.Tanh(),
                                        nn.Linear(HIDDEN, EMBED))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.prototypes = PrototypeLayer(EMBED, PROTOTYPES)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
        image, text = self.image_tower(images), self.text_tower(texts)
        return {"image_features": image, "text_features": text,
                "image_prototypes": self.prototypes(image),
                "text_prototypes": self.prototypes(text),
                "logit_scale": self.logit_scale.exp()}


def global_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One fixed global batch (image inputs, text inputs) per step, identical on every call."""
    gen = torch.Generator().manual_seed(SEED)
    return [(torch.randn(GLOBAL_ROWS, IMAGE_DIM, generator=gen),
             torch.randn(GLOBAL_ROWS, TEXT_DIM, generator=gen)) for _ in range(STEPS)]


def build(name: str) -> tuple[TwoTowers, nn.Module]:
    """The model and the loss ``name`` (from the registry), identical on every call.

    As the trainer does (``_freeze_unused``), what the objective does not use is frozen so that
    DDP waits for no gradient that never comes: the temperature unless the loss needs
    ``logit_scale``, the prototype layer unless it needs ``prototypes``, and the teacher side
    (the text tower) of a ``student-to-teacher`` loss, which detaches it.
    """
    from itra_bench.losses import STUDENT_TO_TEACHER
    from itra_bench.registry import load_registry

    spec = load_registry().losses[name].item
    torch.manual_seed(SEED)
    model = TwoTowers()
    if "logit_scale" not in spec.needs:
        model.logit_scale.requires_grad_(False)
    if "prototypes" not in spec.needs:
        model.prototypes.requires_grad_(False)
    if spec.direction == STUDENT_TO_TEACHER:
        model.text_tower.requires_grad_(False)
    torch.manual_seed(SEED + 1)  # the loss's own layers (heads) draw from the global generator
    loss = spec.factory(student_dim=EMBED, teacher_dim=EMBED, prototypes=PROTOTYPES,
                        **LOSS_OPTIONS[name])
    return model, loss


def _value(result: torch.Tensor | dict[str, torch.Tensor]
           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if isinstance(result, dict):
        return sum(result.values()), {k: v.detach() for k, v in result.items()}  # type: ignore
    return result, {}


def train(name: str, world=None, mode: str = "gather") -> dict[str, Any]:
    """:data:`STEPS` SGD steps of loss ``name``.

    With a one-process ``world`` (the default) this is the single-process reference on the
    whole global batch. Under torchrun every rank takes its rows and, in ``mode="gather"``,
    gathers them with :func:`gather_batch` before the loss; ``mode="local"`` skips the gather.
    Returns per-step ``loss`` and ``terms``, every rank's loss per step (``by_rank``), the final
    ``model`` parameters and ``loss_state`` (parameters and buffers).
    """
    from itra_train.distributed import World, gather_batch

    world = world or World()
    model, loss_fn = build(name)
    ddp: nn.Module = model
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model)
    params = [p for p in [*model.parameters(), *loss_fn.parameters()] if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR)
    rows = GLOBAL_ROWS // world.size
    mine = slice(world.rank * rows, (world.rank + 1) * rows)

    def gather(x: torch.Tensor) -> torch.Tensor:
        return gather_batch(x, world) if mode == "gather" else x

    steps = []
    for images, texts in global_batches():
        optimizer.zero_grad(set_to_none=True)
        out = ddp(images[mine], texts[mine])
        every = {k: gather(v) for k, v in out.items() if k != "logit_scale"}
        value, terms = _value(loss_fn(
            every["image_features"], every["text_features"], out["logit_scale"],
            student_prototypes=every["image_prototypes"],
            teacher_prototypes=every["text_prototypes"]))
        value.backward()
        optimizer.step()
        steps.append({"loss": value.detach(), "terms": terms})

    result: dict[str, Any] = {
        "loss": torch.stack([s["loss"] for s in steps]),
        "terms": [s["terms"] for s in steps],
        "model": {k: v.detach().clone() for k, v in model.named_parameters()},
        "loss_state": {k: v.detach().clone() for k, v in loss_fn.state_dict().items()},
    }
    if world.size > 1:
        import torch.distributed as dist

        losses = [torch.zeros(STEPS) for _ in range(world.size)]
        dist.all_gather(losses, result["loss"])
        result["by_rank"] = torch.stack(losses)  # [ranks, steps]
        states: list[Any] = [None] * world.size
        dist.all_gather_object(states, {"model": result["model"],
                                        "loss_state": result["loss_state"]})
        result["states_by_rank"] = states
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", help="file rank 0 writes (torch.save of the results)")
    parser.add_argument("--losses", nargs="+", default=list(LOSS_OPTIONS))
    parser.add_argument("--local", nargs="*", default=[],
                        help="losses to run once more without gathering (negative control)")
    args = parser.parse_args()

    import torch.distributed as dist

    from itra_train.distributed import init_distributed

    torch.set_num_threads(1)
    world = init_distributed("cpu")
    if world.size < 2 or not dist.is_initialized():
        raise SystemExit("run me under torchrun with at least 2 processes")
    if GLOBAL_ROWS % world.size:
        raise SystemExit(f"{GLOBAL_ROWS} global rows do not split over {world.size} processes")
    results = {"gather": {name: train(name, world) for name in args.losses},
               "local": {name: train(name, world, "local") for name in args.local}}
    if world.is_main:
        torch.save({"world_size": world.size, **results}, args.out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
