"""WebDataset shards against the CSV path: ``itra-train``'s data throughput on the same images.

Both variants read the same JPEG bytes, once as one file per image named by a CSV (the
default ``--dataset-type csv``) and once packed into tar shards by the ShardWriter recipe
of docs/training/shards.md (``--dataset-type webdataset``). Each run builds a real
``Trainer`` (the ``itra-demo`` model, its transform: decode, resize to 32 px, normalise) from
the same flags apart from ``--train-data`` / ``--train-num-samples`` and times one epoch of
one of two modes:

- **loader**: iterate the trainer's DataLoader for the epoch (``trainer.loader``, after the
  epoch is set as ``train_one_epoch`` sets it), nothing else: the data path alone.
- **train**: ``trainer.train_one_epoch(0)``: the data path plus the model's steps.

Cold page cache: dropping the kernel's caches needs root, which this benchmark does not
assume. Instead, right before each timed run, every file the run reads (the images and the
CSV, or the shards) is ``fsync``-ed and evicted with ``posix_fadvise(POSIX_FADV_DONTNEED)``,
which works without root for clean, unmapped pages; ``fincore`` (util-linux), when present,
then reports how much of those files is still resident, and the JSON records it. Reads then
come from the (virtual) disk; a hypervisor's own cache below it is out of reach. ``--warm``
adds runs without eviction.

Fairness: the variants alternate within each repeat (the order flips every repeat); the
ratio reported is wds / csv of samples/s, paired run by run, median over repeats with the
min..max spread; CPU ms/sample (user + system of this process and its reaped DataLoader
workers) beside it, steadier than wall time on a shared machine. The 1-minute load average
is recorded before every run.

Usage::

    python benchmarks/bench_wds_train.py --images 2048 --per-shard 256 --batch-size 64 \\
        --workers 0 2 --modes loader train --repeats 5 --out /tmp/bench_wds_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_data(root: Path, n: int, size: int, per_shard: int, seed: int = 0) -> tuple[Path, str]:
    """``n`` JPEGs (``size`` px, smooth colour fields with noise, about 10-20 kB each as
    web images are), their CSV, and shards of ``per_shard`` samples made from that CSV by
    the docs' recipe. Returns the CSV and the shard pattern."""
    import webdataset as wds

    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    rows = ["filepath\ttitle"]
    for i in range(n):
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        noisy = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
            images / f"{i:06d}.jpg", quality=85)
        rows.append(f"images/{i:06d}.jpg\tpicture number {i} of a colour field")
    csv_path = root / "train.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    # The recipe of docs/training/shards.md, as written there.
    import csv

    (root / "shards").mkdir()
    with wds.ShardWriter(str(root / "shards" / "%05d.tar"), maxcount=per_shard,
                         verbose=0) as sink:
        with csv_path.open(encoding="utf-8-sig", newline="") as f:
            for i, row in enumerate(csv.DictReader(f, delimiter="\t")):
                image = csv_path.parent / row["filepath"]
                sink.write({"__key__": f"{i:09d}", image.suffix[1:].lower(): image.read_bytes(),
                            "txt": row["title"]})
    count = len(list((root / "shards").glob("*.tar")))
    return csv_path, str(root / "shards" / f"{{00000..{count - 1:05d}}}.tar")


def evict(files: list[Path]) -> None:
    """Drop ``files``' pages from the page cache (clean pages; no root needed)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(files: list[Path]) -> float | None:
    """Share of ``files``' pages in the page cache (``fincore``), or None without it."""
    if shutil.which("fincore") is None:
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    total = resident = 0
    for i in range(0, len(files), 500):
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output",
                              "PAGES,SIZE", *map(str, files[i:i + 500])],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            pages, size = line.split()
            resident, total = resident + int(pages), total + -(-int(size) // page)
    return resident / total if total else 0.0


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one_run(variant: str, mode: str, workers: int, data: dict, args, logs: Path, tag: str,
            cold: bool) -> dict:
    """Build a Trainer for ``variant`` and time one epoch of ``mode``."""
    from itra_bench.distributed import World
    from itra_bench.registry import load_registry
    from itra_train.config import load_config
    from itra_train.trainer import Trainer

    train_data = data["csv"] if variant == "csv" else data["pattern"]
    argv = ["--train-data", train_data, "--image-tower", "openclip:itra-demo", "--text-tower",
            "openclip:itra-demo", "--batch-size", str(args.batch_size), "--workers", str(workers),
            "--device", "cpu", "--precision", "fp32", "--no-progress", "--epochs", "1",
            "--warmup", "2", "--logs", str(logs), "--name", tag, "--log-every-n-steps",
            "1000000", "--train-num-samples", str(args.images)]
    if variant == "csv":
        argv += ["--dataset-type", "csv"]
    else:
        argv += ["--dataset-type", "webdataset"]
    cfg, _ = load_config(argv)
    trainer = Trainer(cfg, load_registry([], []), World())
    try:
        files = data["csv_files"] if variant == "csv" else data["shard_files"]
        if cold:
            evict(files)
        resident = resident_fraction(files)
        load = os.getloadavg()[0]
        if mode == "loader":
            if trainer.sampler is not None:
                trainer.sampler.set_epoch(0)
            else:
                trainer.data.set_epoch(0)
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            samples = 0
            for batch in trainer.loader:
                samples += len(batch.texts)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        else:
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            trainer.train_one_epoch(0)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
            samples = trainer.steps_per_epoch * args.batch_size
    finally:
        trainer.out.close()
    return {"variant": variant, "mode": mode, "workers": workers, "cold": cold,
            "samples": samples, "wall_s": wall, "samples_per_s": samples / wall,
            "cpu_ms_per_sample": 1000 * cpu / samples, "resident_before": resident,
            "loadavg_1m": load}


def summarise(runs: list[dict]) -> list[dict]:
    """Paired wds/csv ratios per (mode, workers, cold): medians and spread."""
    rows = []
    keys = sorted({(r["mode"], r["workers"], r["cold"]) for r in runs})
    for mode, workers, cold in keys:
        sel = [r for r in runs if (r["mode"], r["workers"], r["cold"]) == (mode, workers, cold)]
        csv_runs = [r for r in sel if r["variant"] == "csv"]
        wds_runs = [r for r in sel if r["variant"] == "wds"]
        ratios = [w["samples_per_s"] / c["samples_per_s"]
                  for c, w in zip(csv_runs, wds_runs, strict=True)]
        cpu_ratios = [c["cpu_ms_per_sample"] / w["cpu_ms_per_sample"]
                      for c, w in zip(csv_runs, wds_runs, strict=True)]
        med = statistics.median
        rows.append({
            "mode": mode, "workers": workers, "cache": "cold" if cold else "warm",
            "csv_samples_per_s": med(r["samples_per_s"] for r in csv_runs),
            "wds_samples_per_s": med(r["samples_per_s"] for r in wds_runs),
            "ratio_median": med(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "csv_cpu_ms": med(r["cpu_ms_per_sample"] for r in csv_runs),
            "wds_cpu_ms": med(r["cpu_ms_per_sample"] for r in wds_runs),
            "cpu_ratio_median": med(cpu_ratios),
            "resident_max": max((r["resident_before"] or 0.0) for r in sel),
            "loadavg_range": [min(r["loadavg_1m"] for r in sel),
                              max(r["loadavg_1m"] for r in sel)],
            "repeats": len(ratios)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--per-shard", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--modes", nargs="+", default=["loader", "train"],
                        choices=["loader", "train"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warm", action="store_true", help="also time without eviction")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write the data (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    args = parser.parse_args(argv)

    import logging

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.WARNING)
    base = Path(tempfile.mkdtemp(prefix="bench_wds_", dir=args.dir))
    try:
        t0 = time.perf_counter()
        csv_path, pattern = make_data(base / "data", args.images, args.size, args.per_shard)
        image_files = sorted((base / "data" / "images").iterdir())
        shard_files = sorted((base / "data" / "shards").glob("*.tar"))
        data = {"csv": str(csv_path), "pattern": pattern,
                "csv_files": [csv_path, *image_files], "shard_files": shard_files}
        sizes = {"images_bytes": sum(p.stat().st_size for p in image_files),
                 "shards_bytes": sum(p.stat().st_size for p in shard_files),
                 "shards": len(shard_files), "setup_s": time.perf_counter() - t0}
        print(f"data: {args.images} JPEGs, {sizes['images_bytes'] / 1e6:.1f} MB; "
              f"{len(shard_files)} shards, {sizes['shards_bytes'] / 1e6:.1f} MB", flush=True)
        runs = []
        caches = [True, False] if args.warm else [True]
        for rep in range(args.repeats):
            for mode in args.modes:
                for workers in args.workers:
                    for cold in caches:
                        order = ["csv", "wds"] if rep % 2 == 0 else ["wds", "csv"]
                        for variant in order:
                            tag = f"{variant}-{mode}-w{workers}-{'cold' if cold else 'warm'}-r{rep}"
                            run = one_run(variant, mode, workers, data, args, base / "logs",
                                          tag, cold)
                            runs.append(run)
                            print(f"{tag}: {run['samples_per_s']:.0f} samples/s, "
                                  f"{run['cpu_ms_per_sample']:.2f} CPU ms/sample, resident "
                                  f"{run['resident_before']}, load {run['loadavg_1m']:.2f}",
                                  flush=True)
        table = summarise(runs)
        print("\nmode    workers cache  csv s/s  wds s/s  wds/csv (min..max)   CPU ms/sample "
              "csv  wds  resident  load")
        for r in table:
            print(f"{r['mode']:7} {r['workers']:7} {r['cache']:5} {r['csv_samples_per_s']:8.0f} "
                  f"{r['wds_samples_per_s']:8.0f}  {r['ratio_median']:.2f} ({r['ratio_min']:.2f}"
                  f"..{r['ratio_max']:.2f})      {r['csv_cpu_ms']:.2f} {r['wds_cpu_ms']:.2f}   "
                  f"{r['resident_max']:.3f}   {r['loadavg_range'][0]:.1f}..."
                  f"{r['loadavg_range'][1]:.1f}")
        if args.out:
            import platform

            args.out.write_text(json.dumps({
                "argv": sys.argv, "settings": {k: str(v) for k, v in vars(args).items()},
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "torch": torch.__version__, "threads": torch.get_num_threads()},
                "data": sizes, "summary": table, "runs": runs}, indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
