"""Evaluation during training: itra-bench tasks on the current weights, in-process."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from yacs.config import CfgNode

from itra_bench import (
    MissingDataError,
    Registry,
    UserError,
    World,
    check_task_files,
    evaluate,
    missing_task_data,
    resolve_tasks,
    state_dict_digest,
)

from .towers import ItraModel


def check_eval_tasks(cfg: CfgNode, registry: Registry) -> None:
    """Refuse ``--eval-tasks`` that name no task, or whose data is missing or differs from
    what the task expects, before training starts (the first evaluation follows an epoch)."""
    if not cfg.eval_tasks:
        return
    data_root = Path(cfg.eval_data_root).expanduser()
    try:
        tasks = resolve_tasks(list(cfg.eval_tasks), registry)
        missing = missing_task_data(tasks, data_root, {})
        if missing:
            raise MissingDataError(
                f"data not found under --eval-data-root {data_root}: " + "; ".join(
                    f"task {name!r} misses {', '.join(map(str, paths))}"
                    for name, paths in missing.items()))
        check_task_files(tasks, data_root, {})
    except UserError as exc:
        named = UserError(f"--eval-tasks: {exc}")
        named.exit_code = exc.exit_code
        raise named from exc


def evaluate_in_process(model: ItraModel, cfg: CfgNode, registry: Registry, folder: Path,
                        epoch: int, device: torch.device,
                        world: World | None = None) -> dict[str, float]:
    """Main scores (``task/variant/score`` -> value) of ``--eval-tasks`` at this epoch.

    Results are stored like any ``itra-bench run`` under ``<run folder>/eval/``, one model
    per epoch; features are not cached, since the weights change every epoch. The forward
    passes run at the training's ``--precision``. Every rank of a distributed run calls it:
    the evaluation is sharded as ``itra-bench run``'s is.
    """
    # The weights change every epoch: their digest names them.
    model.fingerprint = state_dict_digest(model)[:16]
    results = evaluate(model, list(cfg.eval_tasks), name=f"{folder.name}@epoch_{epoch}",
                       registry=registry, console=Console(stderr=True, quiet=True),
                       show_progress=False, world=world, device=str(device),
                       precision=cfg.precision, batch_size=cfg.eval_batch_size, workers=0,
                       seed=cfg.seed, data_root=cfg.eval_data_root, output=folder / "eval",
                       cache_dir=None)
    return {f"{s.task}/{s.variant}/{s.main_score}": float(s.value)
            for s in results if s.value is not None}
