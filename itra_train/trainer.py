"""The training loop: DDP, mixed precision, accumulation, checkpoints, resume, evaluation."""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from yacs.config import CfgNode

from itra_bench.errors import UnknownNameError, UserError
from itra_bench.registry import Registry

from . import checkpoint
from .config import as_dict, differences
from .data import CsvImageText, collate
from .distributed import World, gather_batch
from .run_folder import RunFolder
from .schedule import adamw, cosine_lr
from .towers import ItraModel, build_model, count_parameters

FEATURES = ("image_features", "text_features")
#: What the model gives a loss (LossSpec.needs is checked against it at start-up).
PROVIDED = frozenset({"logit_scale"})


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; nothing was saved over the last good checkpoint."""


@dataclass
class State:
    """Where training stands: completed epochs and optimizer steps."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_name(cfg: CfgNode) -> str:
    """``--name``, or a timestamp with the model names, as ITRA names runs."""
    if cfg.name:
        return cfg.name
    stamp = datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
    models = "-".join(Path(m).stem for m in (cfg.image_model, cfg.text_model))
    return f"{stamp}-{models}-{cfg.loss}"


class Trainer:
    """One training run: built from settings, then :meth:`fit`."""

    def __init__(self, cfg: CfgNode, registry: Registry, world: World) -> None:
        self.cfg, self.registry, self.world = cfg, registry, world
        self.folder = Path(cfg.logs).expanduser() / run_name(cfg)
        resume = self._resume_path()
        if resume is None and world.is_main and checkpoint.latest_path(self.folder).exists():
            raise UserError(f"{self.folder} already holds a run (checkpoints/epoch_latest.pt); "
                            "continue it with --resume latest, or choose another --name")
        self.out = RunFolder(self.folder, world.is_main)
        self.log = self.out.log
        if cfg.loss not in registry.losses:
            raise UnknownNameError("loss", cfg.loss, registry.losses)
        spec = registry.losses[cfg.loss].item
        lacking = [need for need in spec.needs if need not in PROVIDED]
        if lacking:
            raise UserError(f"--loss {cfg.loss} needs {', '.join(lacking)}, which this model "
                            f"does not provide (it provides {', '.join(sorted(PROVIDED))}); choose "
                            "another --loss or add what it needs")
        seed_all(cfg.seed)
        self.model: ItraModel = build_model(cfg, registry).to(world.device)
        dims = self.model.output_dims()
        self.loss_fn: nn.Module = spec.factory(student_dim=dims[0], teacher_dim=dims[1],
                                               prototypes=0).to(world.device)
        trainable, total = count_parameters(self.model)
        if trainable == 0:
            raise UserError("nothing to train: both towers are locked and there is no head")
        self.log.info(f"model: {trainable:,} trainable of {total:,} parameters")

        self.data = CsvImageText(cfg.train_data, cfg.csv_img_key, cfg.csv_caption_key,
                                 cfg.csv_separator, self.model.image_transform)
        self.sampler = DistributedSampler(self.data, num_replicas=world.size, rank=world.rank,
                                          shuffle=True, seed=cfg.seed)
        self.loader = DataLoader(self.data, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=cfg.workers, collate_fn=collate, drop_last=True,
                                 pin_memory=world.device.type == "cuda",
                                 persistent_workers=False)
        self.steps_per_epoch = len(self.loader) // cfg.accum_freq
        if self.steps_per_epoch == 0:
            global_batch = cfg.batch_size * cfg.accum_freq * world.size
            raise UserError(f"{cfg.train_data}: {len(self.data)} rows make no full batch of "
                            f"{global_batch} (--batch-size x --accum-freq x processes); lower "
                            "--batch-size or add data")
        self.total_steps = self.steps_per_epoch * cfg.epochs

        self.ddp: nn.Module = self.model
        if world.size > 1:
            ids = [world.device.index] if world.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = adamw(self.model, cfg.lr, cfg.wd, (cfg.beta1, cfg.beta2), cfg.eps)
        self.scaler = torch.amp.GradScaler(world.device.type, enabled=cfg.precision == "amp")
        self.state = State()
        if resume is not None:
            self._load(resume)
        self.out.write_params(cfg)

    # -- checkpoints -------------------------------------------------------------------

    def _resume_path(self) -> Path | None:
        if not self.cfg.resume:
            return None
        if self.cfg.resume == "latest":
            path = checkpoint.latest_path(self.folder)
            if not path.exists():
                raise UserError(f"--resume latest: {path} does not exist (no epoch of this run "
                                "finished yet); start without --resume")
            return path
        return Path(self.cfg.resume)

    def _load(self, path: Path) -> None:
        ckpt = checkpoint.load(path)
        diff = differences(ckpt["config"], self.cfg)
        if diff:
            raise UserError(f"--resume {path}: the checkpoint was trained with other settings; "
                            "resume with the same ones or start a new run:\n  "
                            + "\n  ".join(diff))
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = State(epoch=int(ckpt["epoch"]), step=int(ckpt["step"]),
                           history=list(ckpt.get("history", [])))
        checkpoint.set_rng_state(ckpt["rng"])
        self.log.info(f"resumed from {path} after epoch {self.state.epoch} "
                      f"(step {self.state.step})")

    def _save(self) -> None:
        if not self.world.is_main:
            return
        state = {
            "epoch": self.state.epoch, "step": self.state.step, "config": as_dict(self.cfg),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "schedule": {"kind": "cosine", "warmup": self.cfg.warmup,
                         "total_steps": self.total_steps},
            "rng": checkpoint.rng_state(), "history": self.state.history,
        }
        epoch = self.state.epoch
        if epoch % self.cfg.save_frequency == 0 or epoch == self.cfg.epochs:
            checkpoint.save(checkpoint.epoch_path(self.folder, epoch), **state)
        checkpoint.save(checkpoint.latest_path(self.folder), **state)

    # -- one optimizer step ----------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "amp_bf16" else torch.float16
        return torch.autocast(device_type=self.world.device.type, dtype=dtype)

    def _loss(self, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on the global batch (features gathered from every process)."""
        features = {k: gather_batch(out[k].float(), self.world) for k in FEATURES}
        value = self.loss_fn(features["image_features"], features["text_features"],
                             out["logit_scale"].float())
        if isinstance(value, dict):
            terms = {k: float(v.detach()) for k, v in value.items()}
            value = sum(value.values())
            return value, terms
        return value, {}

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).item():
            last = checkpoint.latest_path(self.folder)
            kept = f"the last good checkpoint {last} is kept" if last.exists() else \
                "no checkpoint was written yet"
            raise TrainingDiverged(
                f"the loss is {float(loss.detach())} at epoch {self.state.epoch + 1}, step "
                f"{self.state.step + 1}; training stopped and nothing was saved ({kept}). "
                "Lower --lr, set --grad-clip-norm, or use --precision fp32 / amp_bf16.")

    def _step(self, micro: list[tuple[torch.Tensor, list[str]]]) -> tuple[float, dict[str, float]]:
        device = self.world.device
        micro = [(im.to(device, non_blocking=True), tx) for im, tx in micro]
        self.optimizer.zero_grad(set_to_none=True)
        if len(micro) == 1:
            with self._autocast():
                loss, terms = self._loss(self.ddp(*micro[0]))
            self._check_finite(loss)
            self.scaler.scale(loss).backward()
        else:
            # open_clip's accumulation: features of every micro-batch without gradients first,
            # then each micro-batch again with gradients, placed among the others' features, so
            # the loss sees the whole accumulated batch as one contrastive batch.
            with torch.no_grad(), self._autocast():
                cached = [self.ddp(im, tx) for im, tx in micro]
            for j, (im, tx) in enumerate(micro):
                sync = j == len(micro) - 1 or not isinstance(self.ddp, DistributedDataParallel)
                with (contextlib.nullcontext() if sync else self.ddp.no_sync()), self._autocast():
                    out = self.ddp(im, tx)
                    joined = {k: torch.cat([out[k] if m == j else cached[m][k]
                                            for m in range(len(micro))]) for k in FEATURES}
                    loss, terms = self._loss({**joined, "logit_scale": out["logit_scale"]})
                self._check_finite(loss)
                self.scaler.scale(loss).backward()
        if self.cfg.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach()), terms

    # -- epochs --------------------------------------------------------------------------

    def _micro_batches(self) -> Iterator[list[tuple[torch.Tensor, list[str]]]]:
        group: list[tuple[torch.Tensor, list[str]]] = []
        for batch in self.loader:
            group.append(batch)
            if len(group) == self.cfg.accum_freq:
                yield group
                group = []

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch; returns its record for ``results.jsonl``."""
        cfg, world = self.cfg, self.world
        # Everything random in an epoch (shuffling, augmentation, dropout, worker seeds)
        # derives from (seed, epoch, rank): a resumed run replays exactly what an
        # uninterrupted one would have done.
        seed_all(cfg.seed + 100_003 * (epoch + 1) + world.rank)
        self.sampler.set_epoch(epoch)
        self.model.train()
        samples_per_step = cfg.batch_size * cfg.accum_freq * world.size
        losses: list[float] = []
        interval_start, interval_steps = time.perf_counter(), 0
        with self._progress(epoch) as advance:
            for i, micro in enumerate(self._micro_batches()):
                if i >= self.steps_per_epoch:
                    break
                lr = cosine_lr(self.state.step, cfg.lr, cfg.warmup, self.total_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, terms = self._step(micro)
                losses.append(loss)
                self.state.step += 1
                interval_steps += 1
                advance(loss)
                last = i + 1 == self.steps_per_epoch
                if self.state.step % cfg.log_every_n_steps == 0 or last:
                    elapsed = max(time.perf_counter() - interval_start, 1e-9)
                    rate = interval_steps * samples_per_step / elapsed
                    scale = float(self.model.logit_scale.detach().exp())
                    done = (i + 1) * samples_per_step
                    total = self.steps_per_epoch * samples_per_step
                    extra = "".join(f" {k}: {v:.4f}" for k, v in terms.items())
                    self.log.info(
                        f"Train Epoch: {epoch + 1} [{done}/{total} ({100 * done / total:.0f}%)] "
                        f"loss: {loss:.4f}{extra} lr: {lr:.3e} logit_scale: {scale:.2f} "
                        f"samples/s: {rate:.1f} samples/s/proc: {rate / world.size:.1f}")
                    self.out.scalars({"train/loss": loss, "train/lr": lr,
                                      "train/logit_scale": scale, "train/samples_per_s": rate,
                                      **{f"train/{k}": v for k, v in terms.items()}},
                                     self.state.step)
                    interval_start, interval_steps = time.perf_counter(), 0
        return {"epoch": epoch + 1, "step": self.state.step,
                "train_loss": float(np.mean(losses)), "train_loss_last": losses[-1],
                "lr": lr}

    @contextlib.contextmanager
    def _progress(self, epoch: int) -> Iterator[Any]:
        interactive = self.cfg.progress and self.world.is_main and sys.stderr.isatty()
        if not interactive:
            yield lambda loss: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn(f"epoch {epoch + 1}/{self.cfg.epochs}"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                      TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task("train", total=self.steps_per_epoch, loss="-")
            yield lambda loss: bar.update(task, advance=1, loss=f"{loss:.4f}")

    def _evaluate(self, epoch: int) -> dict[str, float]:
        """Run ``--eval-tasks`` on the current weights (rank 0); others wait."""
        if not self.cfg.eval_tasks or epoch % self.cfg.eval_every != 0:
            return {}
        scores: dict[str, float] = {}
        if self.world.is_main:
            from .evaluation import evaluate_in_process

            rng = checkpoint.rng_state()
            scores = evaluate_in_process(self.model, self.cfg, self.registry, self.folder,
                                         epoch, self.world.device)
            checkpoint.set_rng_state(rng)
            for name, value in scores.items():
                self.log.info(f"eval epoch {epoch}: {name} = {100 * value:.2f}")
            self.out.scalars({f"eval/{k}": v for k, v in scores.items()}, self.state.step)
        self.model.train()
        if self.world.size > 1:
            dist.barrier()
        return scores

    def fit(self) -> Path:
        """Train the remaining epochs; returns the run folder."""
        cfg = self.cfg
        self.log.info(f"run folder {self.folder}; {len(self.data)} samples, "
                      f"{self.steps_per_epoch} steps per epoch, {self.world.size} process(es) "
                      f"on {self.world.device}")
        try:
            for epoch in range(self.state.epoch, cfg.epochs):
                record = self.train_one_epoch(epoch)
                self.state.epoch = epoch + 1
                record.update({f"eval/{k}": v for k, v in self._evaluate(epoch + 1).items()})
                self.state.history.append(record)
                self._save()
                self.out.append_result(record)
                self.log.info(f"epoch {epoch + 1} done: mean loss {record['train_loss']:.4f}; "
                              f"checkpoint {checkpoint.latest_path(self.folder)}")
                if self.world.size > 1:
                    dist.barrier()
        finally:
            self.out.close()
        return self.folder
