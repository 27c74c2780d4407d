"""Training throughput of ``itra-train`` against a plain single-process PyTorch loop.

Both variants train the same model (``itra_train.towers.build_model`` from the same settings,
seeded alike) on the same CSV, with the same DataLoader settings (batch size, workers,
``collate``, the model's own transform, shuffling, ``drop_last``, workers restarted every
epoch), the same AdamW parameter groups (``itra_train.schedule.adamw``, same lr / wd / betas /
eps), the same precision and the same number of torch threads. They differ only in the
machinery around the step:

- **trainer**: ``itra_train.trainer.Trainer(cfg, registry, world).fit()``, in this process,
  exactly as ``itra-train`` runs it in a single process (no torchrun), with its defaults
  (``--log-every-n-steps 10``, ``--save-frequency 1``) and ``--no-progress``:
  DistributedSampler, cosine lr schedule, GradScaler (disabled unless ``amp``), the feature
  gather (a no-op for one process), the finiteness check and loss readback every step, a log
  line plus TensorBoard scalars every 10 steps, ``results.jsonl``, and the checkpoint of every
  epoch (``epoch_N.pt`` written with fsync, ``epoch_latest.pt`` a hard link to it). A subclass only
  records timestamps around ``_step`` and ``train_one_epoch``; it changes nothing else. Its
  log goes to ``out.log`` only (stderr is silenced unless ``--verbose``).
- **plain**: ``for batch in loader: zero_grad; [autocast] forward; InfoNCE (from the
  registry, as the trainer gets it); backward; step``, with the trainer's cosine lr schedule
  (``cosine_lr``, a few microseconds per step; kept so that both variants follow the same lr
  trajectory). No DDP wrapper (the trainer has none in one process either), no scaler, no
  loss readback, no logging, no checkpoint.

What is timed (``--epochs E``, default 4): the first epoch is warm-up and not counted (it
includes the trainer's TensorBoard import and the allocator warming up). Two rates:

- **epoch samples/s**: samples of epochs 2..E over the wall time from the start of epoch 2
  to the end of training (``fit()`` returning): everything a user waits for, including
  DataLoader worker start-up each epoch and, for the trainer, its end-of-epoch work
  (checkpoints, results file).
- **step samples/s**: within each of epochs 2..E, the samples of steps ``k+1..n`` over the
  time from the start of step ``k+1`` to the end of step ``n`` (``--skip-steps k``, default
  2): the steady state inside an epoch, data waits between steps included, worker start-up
  and end-of-epoch work excluded.

On CUDA the timestamps that bound a timed span synchronise the device first (the plain loop
never synchronises otherwise; the trainer reads the loss back every step). The ratio reported
is trainer / plain, paired: each repeat's trainer run divided by the plain run beside it in
time, median over repeats (the samples/s columns are medians of the runs); 1.0 means the
machinery costs nothing.

Diagnostic columns (medians, trainer and plain): **CPU ms/sample**, user + system CPU time
of this process and its reaped workers over the epoch-timed span (steadier than the wall
clock on a shared machine); **in-step ms**, the median time inside one step call (the
trainer's ``_step``; the plain loop's zero_grad..optimizer.step; on CUDA the plain loop's is
only the launch time, since it does not synchronise); **outside ms**, per timed
epoch, the time not spent between its first step's start and last step's end (worker
start-up and the first batch, plus the end-of-epoch work); **1st epoch s**, the untimed
first epoch. The trainer's own ``samples/s`` log lines (epochs 2..) go into the JSON as a
cross-check of the step rate.

Threads: ``torch.set_num_threads(T)`` (``--threads``, default all cores) applies to the main
process for both variants; DataLoader workers run one intra-op thread each.

Usage::

    python benchmarks/bench_train.py --batch-size 64 128 --workers 0 1 --threads 2 \\
        --repeats 3 --out bench_train.json
    # on a GPU (untested here: written for it, never run on one)
    python benchmarks/bench_train.py --device cuda --precision amp_bf16 --workers 4

``--image-model ViT-B-32 --text-model ViT-B-32 --max-rows 256 --batch-size 32`` (open_clip
architectures, random init) runs a bigger model on a subset of the rows; its epochs are then
far shorter than real ones, so its epoch ratio overstates the per-epoch checkpoint's share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import itra_bench
from itra_bench.registry import Registry, load_registry
from itra_bench.runner import seed_everything
from itra_train.config import load_config
from itra_train.data import CsvImageText, collate
from itra_train.demo_data import write_digits_csv
from itra_train.distributed import init_distributed
from itra_train.schedule import adamw, cosine_lr
from itra_train.towers import build_model, count_parameters
from itra_train.trainer import Trainer

VARIANTS = ("trainer", "plain")


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and its reaped children (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Timestamps of epochs and steps; synchronises CUDA at the bounds of timed spans."""

    def __init__(self, device: torch.device, steps_per_epoch: int, skip_steps: int) -> None:
        self.cuda = device.type == "cuda"
        self.steps_per_epoch, self.skip_steps = steps_per_epoch, skip_steps
        self.epochs: list[dict[str, Any]] = []
        self.end = self.end_cpu = 0.0

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def epoch_start(self) -> None:
        self._sync()
        self.epochs.append({"start": time.perf_counter(), "cpu": _cpu_seconds(), "steps": []})

    def before_step(self) -> None:
        steps = self.epochs[-1]["steps"]
        if len(steps) == self.skip_steps:
            self._sync()
        steps.append([time.perf_counter(), 0.0])

    def after_step(self) -> None:
        steps = self.epochs[-1]["steps"]
        if len(steps) == self.steps_per_epoch:
            self._sync()
        steps[-1][1] = time.perf_counter()

    def finish(self) -> None:
        self._sync()
        self.end, self.end_cpu = time.perf_counter(), _cpu_seconds()

    def rates(self, batch_size: int) -> dict[str, float]:
        """Epoch and step samples/s, CPU ms/sample and median in-step ms over epochs 2..;
        the first epoch's seconds (warm-up, not in the rates) as a diagnostic."""
        timed = self.epochs[1:]
        if not timed:
            raise ValueError("--epochs must be at least 2 (the first epoch is not timed)")
        for e in timed:
            if len(e["steps"]) != self.steps_per_epoch:
                raise RuntimeError(f"an epoch ran {len(e['steps'])} steps, expected "
                                   f"{self.steps_per_epoch}")
        samples = batch_size * self.steps_per_epoch * len(timed)
        wall = self.end - timed[0]["start"]
        k = self.skip_steps
        step_wall = sum(e["steps"][-1][1] - e["steps"][k][0] for e in timed)
        step_samples = batch_size * (self.steps_per_epoch - k) * len(timed)
        inside = [t1 - t0 for e in timed for t0, t1 in e["steps"][k:]]
        first = timed[0]["start"] - self.epochs[0]["start"]
        # Per timed epoch, the time outside its steps: from the epoch's start to its first
        # step (worker start-up, first batch) plus from its last step to the next epoch's
        # start or the end of training (the trainer's log, checkpoints and results file).
        ends = [e["start"] for e in timed[1:]] + [self.end]
        outside = [(e["steps"][0][0] - e["start"]) + (end - e["steps"][-1][1])
                   for e, end in zip(timed, ends, strict=True)]
        return {"epoch_samples_per_s": samples / wall,
                "step_samples_per_s": step_samples / step_wall,
                "cpu_ms_per_sample": 1000 * (self.end_cpu - timed[0]["cpu"]) / samples,
                "median_step_ms": 1000 * statistics.median(inside),
                "outside_steps_ms_per_epoch": 1000 * statistics.median(outside),
                "first_epoch_s": first, "epoch_wall_s": wall, "step_wall_s": step_wall}


class TimedTrainer(Trainer):
    """The real trainer; only records when epochs and optimizer steps start and end."""

    clock: Clock

    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        self.clock.epoch_start()
        return super().train_one_epoch(epoch)

    def _step(self, micro):  # type: ignore[no-untyped-def]
        self.clock.before_step()
        try:
            return super()._step(micro)
        finally:
            self.clock.after_step()


def trainer_argv(args: argparse.Namespace, csv: Path, batch_size: int, workers: int,
                 logs: Path, name: str) -> list[str]:
    """The ``itra-train`` command line of one trainer run (also what the plain loop mirrors)."""
    return ["--train-data", str(csv), "--image-tower", f"openclip:{args.image_model}",
            "--text-tower", f"openclip:{args.text_model}", "--epochs", str(args.epochs),
            "--batch-size", str(batch_size), "--lr", str(args.lr), "--wd", str(args.wd),
            "--workers", str(workers), "--precision", args.precision,
            "--device", args.device, "--seed", "0", "--logs", str(logs), "--name", name,
            "--no-progress"]


def run_trainer(argv: list[str], registry: Registry, verbose: bool,
                skip_steps: int) -> tuple[dict[str, float], list[float]]:
    """One in-process ``Trainer.fit()``; returns its rates and the samples/s of its own log
    lines after the first epoch."""
    cfg, _ = load_config(argv)
    with contextlib.ExitStack() as stack:
        if not verbose:  # the trainer logs to stderr; its out.log is read below
            stack.enter_context(contextlib.redirect_stderr(
                stack.enter_context(open(os.devnull, "w"))))
        trainer = TimedTrainer(cfg, registry, init_distributed(cfg.device))
        device = trainer.world.device
        trainer.clock = Clock(device, trainer.steps_per_epoch, skip_steps)
        folder = trainer.fit()
        trainer.clock.finish()
    logged = []
    rates = trainer.clock.rates(cfg.batch_size)
    for line in (folder / "out.log").read_text().splitlines():
        found = re.search(r"Train Epoch: (\d+) .* samples/s: ([\d.]+)", line)
        if found and int(found.group(1)) > 1:
            logged.append(float(found.group(2)))
        loss = re.search(r"Train Epoch: .* loss: (\S+)", line)
        if loss:
            rates["last_loss"] = float(loss.group(1))  # the last logged step's
    return rates, logged


def run_plain(argv: list[str], registry: Registry, skip_steps: int) -> dict[str, float]:
    """The same training as a bare PyTorch loop; returns its rates."""
    cfg, _ = load_config(argv)
    device = init_distributed(cfg.device).device
    seed_everything(cfg.seed)
    model = build_model(cfg, registry).to(device)
    model.train()
    # InfoNCE through the registry (as the trainer finds it), called with positional features.
    loss_fn = registry.losses[cfg.loss].item.factory().to(device)
    data = CsvImageText(cfg.train_data, cfg.csv_img_key, cfg.csv_caption_key,
                        cfg.csv_separator, model.image_transform)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers,
                        collate_fn=collate, drop_last=True, pin_memory=device.type == "cuda")
    optimizer = adamw(model, cfg.lr, cfg.wd, (cfg.beta1, cfg.beta2), cfg.eps)
    if cfg.precision == "fp32":
        autocast: Any = contextlib.nullcontext
    elif cfg.precision == "amp_bf16":
        def autocast() -> Any:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    else:
        raise SystemExit("the plain loop has no GradScaler: use --precision fp32 or amp_bf16")
    clock = Clock(device, len(loader), skip_steps)
    step, total = 0, len(loader) * cfg.epochs
    for _ in range(cfg.epochs):
        clock.epoch_start()
        for batch in loader:
            clock.before_step()
            # The trainer's lr schedule (a few microseconds), so that both variants compute
            # the same kind of trajectory from the same initial weights.
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, cfg.lr, cfg.warmup, total)
            step += 1
            images = batch.images.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                out = model(images, batch.texts)
                loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            loss.backward()
            optimizer.step()
            clock.after_step()
    clock.finish()
    rates = clock.rates(cfg.batch_size)
    # Read back after the timed span: the loop itself never synchronises.
    rates["last_loss"] = float(loss.detach()) if total else float("nan")
    return rates


def subset_csv(csv: Path, rows: int) -> Path:
    """A copy of ``csv`` with its first ``rows`` data rows, beside it (same relative paths)."""
    lines = csv.read_text(encoding="utf-8").splitlines()
    out = csv.with_name(f"train_first{rows}.csv")
    out.write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
    return out


def machine(device: torch.device) -> dict[str, Any]:
    """What ran the benchmark."""
    from machine_info import cpu_name

    cpu = cpu_name()
    import open_clip
    import PIL

    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "open_clip": open_clip.__version__,
            "pillow": PIL.__version__, "itra_bench": itra_bench.__version__,
            "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table and (with ``--out``) write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        help="folder for the demo CSV (written there unless it holds "
                             "train.csv); default: a temp folder")
    parser.add_argument("--max-rows", type=int, default=0,
                        help="train on the first N rows only (for bigger models)")
    parser.add_argument("--image-model", default="itra-demo")
    parser.add_argument("--text-model", default="itra-demo")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[128])
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads of this process (both variants)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per run; the first is warm-up, not timed")
    parser.add_argument("--skip-steps", type=int, default=2,
                        help="steps at the start of each epoch left out of the step rate")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--wd", type=float, default=0.2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "amp_bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each variant per setting; medians are reported")
    parser.add_argument("--verbose", action="store_true", help="show the trainer's log lines")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False")

    torch.set_num_threads(args.threads)
    registry = load_registry([], [])
    settings = [(b, w) for b in args.batch_size for w in args.workers]
    runs: dict[tuple[int, int, str], list[dict[str, float]]] = {
        (b, w, v): [] for b, w in settings for v in VARIANTS}
    logged: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="itra-bench-train-") as tmp:
        folder = args.data or Path(tmp) / "data"
        csv = folder / "train.csv"
        if not csv.is_file():
            print(f"writing the demo CSV to {folder} ...", file=sys.stderr)
            write_digits_csv(folder)
        if args.max_rows:
            csv = subset_csv(csv, args.max_rows)
        rows = len(CsvImageText(csv))
        probe, _ = load_config(trainer_argv(args, csv, 1, 0, Path(tmp), "probe"))
        params = count_parameters(build_model(probe, registry))[0]

        load_before = os.getloadavg()
        started = time.perf_counter()
        # Repeats outermost; within a repeat both variants of a setting run back to back, in
        # alternating order, so drift in machine load hits both alike.
        for r in range(args.repeats):
            for b, w in settings:
                for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                    argv_run = trainer_argv(args, csv, b, w, Path(tmp) / "logs",
                                            f"b{b}-w{w}-r{r}")
                    if variant == "trainer":
                        rates, lines = run_trainer(argv_run, registry, args.verbose,
                                                   args.skip_steps)
                        logged[b, w].extend(lines)
                    else:
                        rates = run_plain(argv_run, registry, args.skip_steps)
                    runs[b, w, variant].append(rates)
                    print(f"repeat {r + 1}/{args.repeats} batch {b} workers {w} {variant:>7}: "
                          f"epoch {rates['epoch_samples_per_s']:.1f} samples/s, step "
                          f"{rates['step_samples_per_s']:.1f} samples/s", file=sys.stderr)
        load_after = os.getloadavg()
        seconds = time.perf_counter() - started

    keys = ("epoch_samples_per_s", "step_samples_per_s", "cpu_ms_per_sample", "median_step_ms",
            "outside_steps_ms_per_epoch", "first_epoch_s")
    table = []
    for b, w in settings:
        med = {v: {k: statistics.median(x[k] for x in runs[b, w, v]) for k in keys}
               for v in VARIANTS}
        table.append({
            "batch_size": b, "workers": w, **{f"{v}_{k}": med[v][k] for v in VARIANTS
                                             for k in keys},
            # Paired: each repeat's trainer run over the plain run next to it in time, then
            # the median; steadier than a ratio of medians when the machine's speed drifts.
            **{f"{kind}_ratio": statistics.median(
                t[f"{kind}_samples_per_s"] / p[f"{kind}_samples_per_s"]
                for t, p in zip(runs[b, w, "trainer"], runs[b, w, "plain"], strict=True))
               for kind in ("epoch", "step")},
            "trainer_logged_samples_per_s": statistics.median(logged[b, w])
            if logged[b, w] else None,
            "runs": {v: runs[b, w, v] for v in VARIANTS}})

    device = torch.device(args.device)
    print(f"\n{args.image_model}/{args.text_model} ({params:,} trainable parameters), {rows} "
          f"rows, {args.precision} on {args.device}, {args.threads} threads, {args.epochs} "
          f"epochs (first not timed), median of {args.repeats}, torch {torch.__version__}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{seconds:.0f} s")
    # Each column pair: trainer, plain. Ratios: trainer / plain.
    print(f"{'batch':>5} {'workers':>7} | {'epoch samples/s':>15} {'ratio':>6} | "
          f"{'step samples/s':>15} {'ratio':>6} | {'CPU ms/sample':>13} | {'in-step ms':>13} | "
          f"{'outside ms':>13} | {'1st epoch s':>11}")
    for t in table:
        cells = [f"{t['batch_size']:>5} {t['workers']:>7}"]
        for key, fmt, ratio in (("epoch_samples_per_s", "7.1f", "epoch_ratio"),
                                ("step_samples_per_s", "7.1f", "step_ratio"),
                                ("cpu_ms_per_sample", "6.2f", None),
                                ("median_step_ms", "6.1f", None),
                                ("outside_steps_ms_per_epoch", "6.0f", None),
                                ("first_epoch_s", "5.2f", None)):
            pair = f"{t['trainer_' + key]:{fmt}} {t['plain_' + key]:{fmt}}"
            cells.append(pair + (f" {t[ratio]:6.3f}" if ratio else ""))
        print(" | ".join(cells))

    report = {"benchmark": "trainer_vs_plain_loop", "command": sys.argv,
              "image_model": args.image_model, "text_model": args.text_model,
              "trainable_parameters": params, "rows": rows, "epochs": args.epochs,
              "skip_steps": args.skip_steps, "threads": args.threads, "device": args.device,
              "precision": args.precision, "lr": args.lr, "wd": args.wd,
              "repeats": args.repeats, "machine": machine(device),
              "load_average_before": load_before, "load_average_after": load_after,
              "seconds": seconds, "rows_table": table}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
