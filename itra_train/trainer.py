"""The training loop: DDP, mixed precision, accumulation, checkpoints, resume, evaluation."""

from __future__ import annotations

import contextlib
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

from itra_bench import (
    STUDENT_TO_TEACHER,
    CorruptImageError,
    LossSpec,
    PluginBugError,
    Registry,
    UserError,
    build_loss,
    check_loss_factory,
    check_loss_options,
    check_precision,
    precision_autocast,
    seed_everything,
)

from . import checkpoint
from .adapters import check_adapter
from .config import as_dict, dataset_type, differences, loss_options
from .data import Batch, CsvImageText, DecodeFailure, collate
from .distributed import World, gather_batch
from .evaluation import check_eval_tasks, evaluate_in_process
from .run_folder import RunFolder
from .schedule import adamw, cosine_lr
from .teacher import build_teacher
from .tower_specs import model_name
from .towers import (
    ItraModel,
    build_model,
    check_builders,
    count_parameters,
    freeze_side,
    tower_providers,
)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; nothing was saved over the last good checkpoint."""


@dataclass
class State:
    """Where training stands: completed epochs and optimizer steps."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def run_name(cfg: CfgNode) -> str:
    """``--name``, or a timestamp with the model names, as ITRA names runs."""
    if cfg.name:
        return cfg.name
    stamp = datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
    models = "-".join(Path(model_name(t)).stem for t in (cfg.image_tower, cfg.text_tower))
    return f"{stamp}-{models}-{cfg.loss}"


class WeightedInfoNCE(nn.Module):
    """``weight * InfoNCE``, the alignment term added to distillation by --align-weight."""

    def __init__(self, weight: float, infonce: nn.Module) -> None:
        super().__init__()
        self.weight, self.infonce = weight, infonce

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor, **_: object) -> torch.Tensor:
        return self.weight * self.infonce(student, teacher, logit_scale)


def _kind_of(value: Any) -> str:
    """What a loss returned, for messages: a tensor's shape, a dict's entries."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    if isinstance(value, dict):
        return "a dict of " + ", ".join(f"{k!r}: {_kind_of(v)}" for k, v in value.items())
    return f"a {type(value).__name__}"


def objective_pairs(cfg: CfgNode) -> list[tuple[str, str, str]]:
    """``(name, student side, teacher side)`` of each loss term.

    Without a teacher, one term aligns the image tower (student) with the text tower; with
    ``--teacher``, each ``--distill-image X`` / ``--distill-text X`` adds a term where that
    student tower learns from the teacher's ``X`` tower (``teacher:X``).
    """
    if not cfg.teacher:
        return [("align", "image", "text")]
    pairs = []
    if cfg.distill_image:
        pairs.append(("image", "image", f"teacher:{cfg.distill_image}"))
    if cfg.distill_text:
        pairs.append(("text", "text", f"teacher:{cfg.distill_text}"))
    if cfg.align_weight > 0:
        pairs.append(("align", "image", "text"))
    return pairs


class Trainer:
    """One training run: built from settings, then :meth:`fit`."""

    def __init__(self, cfg: CfgNode, registry: Registry, world: World) -> None:
        self.cfg, self.registry, self.world = cfg, registry, world
        self.folder = Path(cfg.logs).expanduser() / run_name(cfg)
        # What plugins define (model schemes, the loss and its options) is checked before
        # the run folder is created or locked.
        check_builders(cfg, registry)
        check_adapter(cfg)
        check_precision(cfg.precision, world.device)
        self.spec = registry.loss(cfg.loss)
        self.options = loss_options(cfg)
        check_loss_options(self.spec, self.options)
        check_loss_factory(self.spec, registry.losses[cfg.loss].plugin)
        check_eval_tasks(cfg, registry)
        resume = self._resume_path()
        self.out = RunFolder(self.folder, world.is_main)
        try:
            if resume is None and world.is_main and checkpoint.latest_path(self.folder).exists():
                raise UserError(f"{self.folder} already holds a run "
                                "(checkpoints/epoch_latest.pt); continue it with --resume "
                                "latest, or choose another --name")
            self._build(resume)
        except BaseException:
            # Releases the run folder's lock; a folder this start created goes with it.
            self.out.discard()
            raise

    def _build(self, resume: Path | None) -> None:
        """Model, teacher, objective, data and optimizer, built under the run folder's lock."""
        cfg, registry, world = self.cfg, self.registry, self.world
        self.log = self.out.log
        seed_everything(cfg.seed)
        self.model: ItraModel = build_model(cfg, registry)
        self.teacher = build_teacher(cfg, registry) if cfg.teacher else None
        self.pairs = objective_pairs(cfg)
        self._check_needs()
        self._freeze_unused()
        self.model.to(world.device)
        if self.teacher is not None:
            self.teacher.to(world.device)
        try:
            self.loss_fns = nn.ModuleDict({
                name: self._objective(name, student, teacher, self.options)
                for name, student, teacher in self.pairs}).to(world.device)
        except (TypeError, ValueError) as exc:
            raise UserError(f"--loss {cfg.loss}: {exc}") from exc
        trainable, total = count_parameters(nn.ModuleList([self.model, self.loss_fns]))
        if trainable == 0:
            raise UserError("nothing to train: every parameter is frozen (locked towers, "
                            "no head)")
        self.log.info(f"model: {trainable:,} trainable of {total:,} parameters; objective "
                      f"{cfg.loss} on " + ", ".join(f"{s} <- {t}" for _, s, t in self.pairs))

        teacher_transform = None
        if self.teacher is not None and "teacher:image" in {t for _, _, t in self.pairs} \
                and not cfg.cache_teacher:
            teacher_transform = self.teacher.image_transform
        self.dataset_type = dataset_type(cfg)
        if self.dataset_type == "webdataset":
            self._build_shards(teacher_transform)
        else:
            self._build_csv(teacher_transform)
        self.total_steps = self.steps_per_epoch * cfg.epochs

        self.ddp: nn.Module = self.model
        if world.size > 1:
            ids = [world.device.index] if world.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = adamw(nn.ModuleList([self.model, self.loss_fns]), cfg.lr, cfg.wd,
                               (cfg.beta1, cfg.beta2), cfg.eps)
        self.scaler = torch.amp.GradScaler(world.device.type, enabled=cfg.precision == "amp_fp16")
        self.state = State()
        if resume is not None:
            self._load(resume)
        self.out.write_params(cfg)

    def _build_csv(self, teacher_transform: Any) -> None:
        """The CSV dataset, its sampler and loader (``--dataset-type csv``)."""
        cfg, world = self.cfg, self.world
        if cfg.skip_corrupt:
            raise UserError("--skip-corrupt applies to webdataset shards; a CSV's images "
                            "are named by row, so remove or replace the rows of images that "
                            "cannot be read")
        self.data = CsvImageText(cfg.train_data, cfg.csv_img_key, cfg.csv_caption_key,
                                 cfg.csv_separator, self.model.image_transform,
                                 teacher_transform)
        self.teacher_cache: dict[str, torch.Tensor] = {}
        if self.teacher is not None and cfg.cache_teacher:
            from .teacher import cached_teacher_features

            sides = {t.split(":")[1] for _, _, t in self.pairs}
            self.log.info(f"encoding the training set with the teacher once ({sorted(sides)})")
            self.teacher_cache = cached_teacher_features(
                self.teacher, self.data, sides, world.device,
                Path(cfg.cache_dir).expanduser(), cfg.eval_batch_size,
                cfg.workers)
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

    def _build_shards(self, teacher_transform: Any) -> None:
        """The webdataset shards and their loader (``--dataset-type webdataset``): every
        rank makes the same number of batches an epoch, from shards no other rank or worker
        reads in that epoch (unless --dataset-resampled)."""
        cfg, world = self.cfg, self.world
        from .wds_data import WebDatasetImageText, expand_shards

        if cfg.cache_teacher:
            raise UserError("--cache-teacher encodes a CSV's rows by index; webdataset shards "
                            "are streamed, so drop --cache-teacher (the teacher then encodes "
                            "each batch)")
        if cfg.train_num_samples < 1:
            raise UserError("--dataset-type webdataset needs --train-num-samples N: the "
                            "samples an epoch takes from the shards (open_clip's flag)")
        shards = expand_shards(cfg.train_data)
        readers = world.size * max(1, cfg.workers)
        if not cfg.dataset_resampled and len(shards) < readers:
            raise UserError(
                f"--train-data names {len(shards)} shard(s), fewer than the {world.size} "
                f"process(es) x {max(1, cfg.workers)} --workers = {readers} readers that each "
                "need shards of their own in an epoch; lower --workers, split the data into "
                "more shards, or pass --dataset-resampled (shards drawn with replacement)")
        global_batch = cfg.batch_size * cfg.accum_freq * world.size
        self.steps_per_epoch = cfg.train_num_samples // global_batch
        if self.steps_per_epoch == 0:
            raise UserError(f"--train-num-samples {cfg.train_num_samples} makes no full batch "
                            f"of {global_batch} (--batch-size x --accum-freq x processes); "
                            "raise --train-num-samples or lower --batch-size")
        self.data = WebDatasetImageText(
            shards, cfg.batch_size, self.steps_per_epoch * cfg.accum_freq, world.rank,
            world.size, cfg.seed, resampled=cfg.dataset_resampled,
            skip_corrupt=cfg.skip_corrupt, num_samples=cfg.train_num_samples,
            transform=self.model.image_transform, teacher_transform=teacher_transform)
        self.teacher_cache = {}
        self.sampler = None
        # Batches are made in the dataset (each worker reports what it skipped on them).
        self.loader = DataLoader(self.data, batch_size=None, num_workers=cfg.workers,
                                 pin_memory=world.device.type == "cuda",
                                 persistent_workers=False)
        how = "drawn with replacement" if cfg.dataset_resampled else \
            "each shard read by one worker an epoch"
        self.log.info(f"webdataset: {len(shards)} shard(s), {cfg.train_num_samples} samples "
                      f"an epoch ({how})")

    # -- the objective ------------------------------------------------------------------

    def _objective(self, name: str, student: str, teacher: str, options: dict[str, Any]
                   ) -> nn.Module:
        if self._is_align(name):
            infonce = build_loss(self._term_spec(name), self.model.joint_dim,
                                 self.model.joint_dim, self.cfg.prototypes, {})
            return WeightedInfoNCE(self.cfg.align_weight, infonce)
        return build_loss(self.spec, self._width(student), self._width(teacher),
                          self.cfg.prototypes, options)

    def _is_align(self, name: str) -> bool:
        """Whether the term ``name`` is the --align-weight term beside distillation: InfoNCE
        between the student's towers."""
        return name == "align" and self.teacher is not None

    def _term_spec(self, name: str) -> LossSpec:
        """The loss that computes the term ``name``."""
        return self.registry.loss("infonce") if self._is_align(name) else self.spec

    def _width(self, side: str) -> int:
        """Feature width of a side: ``image``/``text`` (the model's joint space) or
        ``teacher:image``/``teacher:text``."""
        if not side.startswith("teacher:"):
            return self.model.joint_dim
        from .towers import tower_width

        return tower_width(self.teacher, side.split(":")[1])

    def _check_needs(self) -> None:
        """Refuse a loss that this model cannot feed, before any data is read."""
        cfg, needs = self.cfg, self.spec.needs
        if "teacher" in needs and self.teacher is None:
            raise UserError(f"--loss {cfg.loss} distils from a frozen teacher: give --teacher "
                            "SPEC and --distill-image/--distill-text")
        if "prototypes" in needs:
            if self.model.prototypes is None:
                raise UserError(f"--loss {cfg.loss} needs a prototype layer: add --prototypes N "
                                "(and --image-head dino --text-head dino)")
            for _, _, teacher in self.pairs:
                if teacher.startswith("teacher:") and self._width(teacher) != \
                        self.model.joint_dim:
                    raise UserError(
                        f"--loss {cfg.loss} scores the teacher's features against the "
                        f"prototypes, so the teacher's {teacher.split(':')[1]} width "
                        f"({self._width(teacher)}) must equal the joint width "
                        f"({self.model.joint_dim}); set --embed-dim {self._width(teacher)}")
        unknown = set(needs) - {"teacher", "prototypes", "logit_scale"}
        if unknown:
            raise UserError(f"--loss {cfg.loss} needs {', '.join(sorted(unknown))}, which "
                            "itra-train does not provide")

    def _freeze_unused(self) -> None:
        """Freeze what no loss term uses: DDP needs a gradient for every trainable
        parameter, and a frozen tower is not computed at all."""
        used = {s for _, s, _ in self.pairs} | {t for _, _, t in self.pairs}
        for side in ("image", "text"):
            if side not in used:
                freeze_side(self.model, side)
        if self.teacher is None and self.spec.direction == STUDENT_TO_TEACHER:
            # The text tower is the target of a uni-directional loss and gets no gradient;
            # it still runs, so it stays in `used`.
            freeze_side(self.model, "text")
        aligned = self.teacher is not None and self.cfg.align_weight > 0
        if "logit_scale" not in self.spec.needs and not aligned:
            self.model.logit_scale.requires_grad_(False)
        if self.model.prototypes is not None and "prototypes" not in self.spec.needs:
            for p in self.model.prototypes.parameters():
                p.requires_grad_(False)
        self.sides = used

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
        self.loss_fns.load_state_dict(ckpt.get("loss", {}))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = State(epoch=int(ckpt["epoch"]), step=int(ckpt["step"]),
                           history=list(ckpt.get("history", [])))
        checkpoint.set_rng_state(ckpt["rng"])
        self.log.info(f"resumed from {path} after epoch {self.state.epoch} "
                      f"(step {self.state.step})")
        restored = self.out.restore_results(self.state.history)
        if restored:
            self.log.info(f"results.jsonl lacked {restored} epoch line(s) that the checkpoint "
                          "records (a run stopped between the two writes); restored them")

    def _save(self) -> None:
        if not self.world.is_main:
            return
        state = {
            "epoch": self.state.epoch, "step": self.state.step, "config": as_dict(self.cfg),
            "model": self.model.state_dict(), "loss": self.loss_fns.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "schedule": {"kind": "cosine", "warmup": self.cfg.warmup,
                         "total_steps": self.total_steps},
            "rng": checkpoint.rng_state(), "history": self.state.history,
            # Rebuilding the towers needs their plugins: named here for the message when one
            # is missing (never imported from here).
            "plugins": tower_providers(self.cfg, self.registry),
        }
        epoch = self.state.epoch
        latest = checkpoint.latest_path(self.folder)
        with self.out.writing():
            if epoch % self.cfg.save_frequency == 0 or epoch == self.cfg.epochs:
                numbered = checkpoint.save(checkpoint.epoch_path(self.folder, epoch), **state)
                # The same bytes: linked, not written twice.
                checkpoint.link_or_copy(numbered, latest)
            else:
                checkpoint.save(latest, **state)

    # -- one optimizer step ----------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return precision_autocast(self.cfg.precision, self.world.device)

    def _forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The model's outputs for the sides the objective uses, plus the teacher's."""
        device = self.world.device
        images = batch.images.to(device, non_blocking=True) if "image" in self.sides else None
        texts = batch.texts if "text" in self.sides else None
        out = dict(self.ddp(images, texts))
        if self.teacher is not None:
            with torch.no_grad():
                for side in ("image", "text"):
                    if f"teacher:{side}" not in self.sides:
                        continue
                    if side in self.teacher_cache:
                        feats = self.teacher_cache[side][batch.indices].to(device)
                    elif side == "image":
                        feats = self.teacher.encode_image(
                            batch.teacher_images.to(device, non_blocking=True))
                    else:
                        feats = self.teacher.encode_text(batch.texts)
                    out[f"teacher:{side}_features"] = feats.float()
                    if self.model.prototypes is not None and "prototypes" in self.spec.needs:
                        out[f"teacher:{side}_prototypes"] = self.model.prototypes(feats.float())
        return out

    def _loss(self, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on the global batch (features gathered from every process): the sum
        over the (student <- teacher) pairs of the loss."""
        every = {k: gather_batch(v.float(), self.world) for k, v in out.items()
                 if k != "logit_scale"}
        total: torch.Tensor | float = 0.0
        terms: dict[str, float] = {}
        prototypes = "prototypes" in self.spec.needs
        for name, student, teacher in self.pairs:
            # Only a loss that declares needs=("prototypes",) is passed the prototype keywords
            # (the LossSpec contract), so a minimal loss need not accept them.
            extra = {"student_prototypes": every.get(f"{student}_prototypes"),
                     "teacher_prototypes": every.get(f"{teacher}_prototypes")} \
                if prototypes else {}
            value = self._call_term(name, every[f"{student}_features"],
                                    every[f"{teacher}_features"], out["logit_scale"].float(),
                                    **extra)
            prefix = "" if len(self.pairs) == 1 else f"{name}/"
            if isinstance(value, dict):
                terms.update({f"{prefix}{k}": float(v.detach()) for k, v in value.items()})
                value = sum(value.values())
            elif prefix:
                terms[name] = float(value.detach())
            total = total + value
        return total, terms  # type: ignore[return-value]

    def _call_term(self, name: str, *args: torch.Tensor, **kwargs: torch.Tensor | None
                   ) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss term ``name`` on a batch; a loss that raises, or returns anything but a
        scalar tensor or a dict of scalar tensors, is its plugin's bug."""
        try:
            value = self.loss_fns[name](*args, **kwargs)
        except (UserError, MemoryError, torch.cuda.OutOfMemoryError):
            # A deliberate refusal, or the machine's limit: not the plugin's bug.
            raise
        except Exception as exc:
            raise self._loss_bug(name, f"raised {type(exc).__name__}: {exc}") from exc
        parts = value.values() if isinstance(value, dict) else [value]
        if not all(isinstance(v, torch.Tensor) and v.numel() == 1 for v in parts):
            raise self._loss_bug(name, f"returned {_kind_of(value)}")
        return value

    def _loss_bug(self, name: str, problem: str) -> PluginBugError:
        """The error for the loss of the term ``name`` that broke its contract."""
        spec = self._term_spec(name)
        plugin = self.registry.losses[spec.name].plugin
        return PluginBugError(
            f"plugin bug: loss {spec.name!r} of {plugin.describe()}, module {plugin.module}, "
            f"{problem}. A loss called as loss(student [B, Ds], teacher [B, Dt], "
            "logit_scale) must return a scalar tensor or a dict of scalar tensors (see "
            "itra_bench.LossSpec); report it to the plugin's authors (rerun with "
            "--debug for the traceback).")

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).item():
            last = checkpoint.latest_path(self.folder)
            kept = f"the last good checkpoint {last} is kept" if last.exists() else \
                "no checkpoint was written yet"
            raise TrainingDiverged(
                f"the loss is {float(loss.detach())} at epoch {self.state.epoch + 1}, step "
                f"{self.state.step + 1}; training stopped and nothing was saved ({kept}). "
                "Lower --lr, set --grad-clip-norm, or use --precision fp32 / amp_bf16.")

    def _step(self, micro: list[Batch]) -> tuple[float, dict[str, float]]:
        self.optimizer.zero_grad(set_to_none=True)
        if len(micro) == 1:
            with self._autocast():
                loss, terms = self._loss(self._forward(micro[0]))
            self._check_finite(loss)
            self.scaler.scale(loss).backward()
        else:
            # open_clip's accumulation: features of every micro-batch without gradients first,
            # then each micro-batch again with gradients, placed among the others' features, so
            # the loss sees the whole accumulated batch as one contrastive batch.
            with torch.no_grad(), self._autocast():
                cached = [self._forward(batch) for batch in micro]
            # Stateful losses (queues, centres, episodes) update their buffers in each call; every
            # micro-batch's call sees the state before the step, and the last call's update stays.
            before = {k: v.clone() for k, v in self.loss_fns.state_dict().items()}
            for j, batch in enumerate(micro):
                if j:
                    self.loss_fns.load_state_dict(before)
                sync = j == len(micro) - 1 or not isinstance(self.ddp, DistributedDataParallel)
                with (contextlib.nullcontext() if sync else self.ddp.no_sync()), self._autocast():
                    out = self._forward(batch)
                    joined = {k: torch.cat([out[k] if m == j else cached[m][k]
                                            for m in range(len(micro))])
                              for k in out if k != "logit_scale"}
                    loss, terms = self._loss({**joined, "logit_scale": out["logit_scale"]})
                self._check_finite(loss)
                self.scaler.scale(loss).backward()
        if self.cfg.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.cfg.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach()), terms

    # -- epochs --------------------------------------------------------------------------

    def _micro_batches(self) -> Iterator[list[Batch]]:
        group: list[Batch] = []
        for batch in self.loader:
            if isinstance(batch, DecodeFailure):
                # Raised here, not in the worker: a worker's exception reaches the user
                # wrapped in its traceback.
                raise CorruptImageError(batch.message)
            self._skipped.extend(batch.skipped)
            self._repeats += batch.repeats
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
        seed_everything(cfg.seed + 100_003 * (epoch + 1) + world.rank)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        else:
            self.data.set_epoch(epoch)
        self._skipped: list[str] = []
        self._repeats = 0
        self.model.train()
        samples_per_step = cfg.batch_size * cfg.accum_freq * world.size
        losses: list[float] = []
        term_sums: dict[str, float] = {}
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
                for k, v in terms.items():
                    term_sums[k] = term_sums.get(k, 0.0) + v
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
        record = {"epoch": epoch + 1, "step": self.state.step,
                  "train_loss": float(np.mean(losses)), "train_loss_last": losses[-1],
                  **{f"train/{k}": v / len(losses) for k, v in term_sums.items()}, "lr": lr}
        if self.dataset_type == "webdataset":
            record.update(self._shard_report(epoch))
        return record

    def _shard_report(self, epoch: int) -> dict[str, Any]:
        """Log what the epoch's readers skipped (--skip-corrupt) or read twice, summed over
        the ranks; the counts go into the epoch's record."""
        skipped, repeats = self._skipped, self._repeats
        if self.world.size > 1:
            parts: list[Any] = [None] * self.world.size
            dist.all_gather_object(parts, (skipped, repeats))
            skipped = [m for part, _ in parts for m in part]
            repeats = sum(r for _, r in parts)
        if skipped and self.world.is_main:
            shown = "\n  ".join(skipped[:10])
            more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
            self.log.warning(f"epoch {epoch + 1}: --skip-corrupt skipped {len(skipped)} "
                             f"sample(s) or shard remainder(s):\n  {shown}{more}")
        if repeats and self.world.is_main:
            self.log.warning(
                f"epoch {epoch + 1}: {repeats} sample(s) were read a second time in this "
                "epoch: some worker's shards held fewer samples than its share of "
                f"--train-num-samples {self.cfg.train_num_samples}; lower it, or use more "
                "(or more even) shards")
        return {"skipped_corrupt": len(skipped), "repeated_samples": repeats}

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
        """Run ``--eval-tasks`` on the current weights, sharded across the ranks."""
        if not self.cfg.eval_tasks or epoch % self.cfg.eval_every != 0:
            return {}
        rng = checkpoint.rng_state()
        scores = evaluate_in_process(self.model, self.cfg, self.registry, self.folder,
                                     epoch, self.world.device, self.world)
        checkpoint.set_rng_state(rng)
        if self.world.is_main:
            for name, value in scores.items():
                self.log.info(f"eval epoch {epoch}: {name} = {100 * value:.2f}")
            self.out.scalars({f"eval/{k}": v for k, v in scores.items()}, self.state.step)
        self.model.train()
        return scores

    def fit(self) -> Path:
        """Train the remaining epochs; returns the run folder."""
        cfg = self.cfg
        self.log.info(f"run folder {self.folder}; {len(self.data)} samples, "
                      f"{self.steps_per_epoch} steps per epoch, {self.world.size} process(es) "
                      f"on {self.world.device}")
        self._warn_long_warmup()
        if self.state.epoch < cfg.epochs:
            self.out.clear_finished()  # a resumed run with more epochs is running again
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
            # Last: `itra-bench watch` stops once it sees it (every checkpoint is written).
            self.out.mark_finished({"epochs": cfg.epochs, "step": self.state.step,
                                    "finished": datetime.now().isoformat(timespec="seconds")})
        finally:
            self.out.close()
        return self.folder

    def _warn_long_warmup(self) -> None:
        """Warn when the warm-up outlasts the run: the learning rate would never reach
        ``--lr``. (Warned, not capped: the schedule stays the one the settings name.)"""
        cfg, total = self.cfg, self.total_steps
        if cfg.warmup <= total:
            return
        peak = cosine_lr(total - 1, cfg.lr, cfg.warmup, total)
        self.log.warning(
            f"--warmup {cfg.warmup} is longer than the whole run ({total} steps: "
            f"{self.steps_per_epoch} per epoch x {cfg.epochs} epochs): the learning rate "
            f"peaks at {peak:.3g} instead of --lr {cfg.lr:g}. Give --warmup {total // 10} "
            "or so (about a tenth of the run), or more --epochs.")
