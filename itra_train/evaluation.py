"""Evaluation during training: itra-bench tasks on the current weights, in-process."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from yacs.config import CfgNode

from itra_bench.distributed import World
from itra_bench.errors import MissingDataError, UserError
from itra_bench.registry import Registry
from itra_bench.runner import RunConfig, check_files, missing_data, run, select_tasks
from itra_bench.weights import state_dict_digest

from .towers import ItraModel


def check_eval_tasks(cfg: CfgNode, registry: Registry) -> None:
    """Refuse ``--eval-tasks`` that name no task, or whose data is missing or differs from
    what the task expects, before training starts (the first evaluation follows an epoch)."""
    if not cfg.eval_tasks:
        return
    data_root = Path(cfg.eval_data_root).expanduser()
    try:
        tasks = select_tasks(list(cfg.eval_tasks), registry).tasks
        missing = missing_data(tasks, data_root, {})
        if missing:
            raise MissingDataError(
                f"data not found under --eval-data-root {data_root}: " + "; ".join(
                    f"task {name!r} misses {', '.join(map(str, paths))}"
                    for name, paths in missing.items()))
        check_files(tasks, data_root, {})
    except UserError as exc:
        named = UserError(f"--eval-tasks: {exc}")
        named.exit_code = exc.exit_code
        raise named from exc


def evaluate_in_process(model: ItraModel, cfg: CfgNode, registry: Registry, folder: Path,
                        epoch: int, device: torch.device,
                        world: World | None = None) -> dict[str, float]:
    """Main scores (``task/variant/score`` -> value) of ``--eval-tasks`` at this epoch.

    Results are stored like any ``itra-bench run`` under ``<run folder>/eval/``, one model
    per epoch; features are not cached, since the weights change every epoch. Every rank of a
    distributed run calls it: the evaluation is sharded as ``itra-bench run``'s is.
    """
    config = RunConfig(model=f"{folder.name}@epoch_{epoch}", tasks=list(cfg.eval_tasks),
                       device=str(device), batch_size=cfg.eval_batch_size, workers=0,
                       seed=cfg.seed, data_root=cfg.eval_data_root,
                       output=str(folder / "eval"), cache_dir=None)
    model.name = config.model
    model.fingerprint = state_dict_digest(model)[:16]
    was_training = model.training
    try:
        outcomes = run(config, registry, Console(stderr=True, quiet=True), show_progress=False,
                       model=model, world=world)
    finally:
        model.train(was_training)
    return {f"{o.task}/{o.variant}/{o.main_score}": float(o.value)
            for o in outcomes if o.value is not None}
