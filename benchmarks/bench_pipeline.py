"""Evaluation-pipeline throughput against the raw forward pass of the same model.

Raw: images decoded and transformed once, up front, then only ``model.encode_image`` over
batches is timed, under ``torch.inference_mode`` (one warm-up batch first, not timed).
Pipeline: ``itra_bench.encoding.encode_images`` over an ImageFolder of JPEGs, timed whole:
file reading, JPEG decoding and the transform (in DataLoader workers when ``workers > 0``),
batching, worker start-up and the same forward pass. Both report images per second; the
ratio pipeline / raw says how much of the model's speed the pipeline delivers. Runs of the two
alternate, and each setting's median over ``--repeats`` runs is reported.

Threads: ``torch.set_num_threads(T)`` (``--threads``, default: all cores) applies to the main
process, where the forward pass runs, for raw and pipeline alike; DataLoader workers run one
intra-op thread each (PyTorch sets that in every worker), so with ``W`` workers the machine
runs ``T + W`` busy threads. The CPU ms/img column (this process plus its reaped workers, all
threads) shows the work done per image, which on a machine shared with other jobs is steadier
than wall-clock speed.

Usage::

    python benchmarks/bench_pipeline.py --images 256 --batch-size 64 --workers 0 1 2 \\
        --threads 2 --repeats 2 --out bench_pipeline.json

The model is torchvision's ResNet-18 with random weights (seeded; throughput does not depend
on the values) and its classification head removed, with the standard ImageNet eval transform.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import models, transforms

import itra_bench
from itra_bench.context import RunContext
from itra_bench.datasets.imagefolder import ImageFolderSplit
from itra_bench.encoding import encode_images
from itra_bench.model import IMAGE, EncoderModel

NUM_CLASSES = 10
IMAGE_SIZE = (320, 240)  # width, height of the generated JPEGs


class ResNet18Features(EncoderModel):
    """torchvision ResNet-18 (seeded random weights) as a 512-d image encoder."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = models.resnet18(weights=None)
        self.net.fc = nn.Identity()
        self.modalities = frozenset({IMAGE})
        self.fingerprint = f"bench-resnet18-random-{seed}"
        self.image_transform = transforms.Compose([
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def make_image_folder(root: Path, count: int, seed: int = 0) -> Path:
    """Write ``count`` JPEGs in ImageFolder layout ``root/test/<class>/<n>.jpg``; returns root.

    Content is a coarse random colour field upsampled to 320x240 plus pixel noise, so files
    decode like photos (smooth regions and texture, ~15-30 kB) rather than like pure noise.
    """
    rng = np.random.default_rng(seed)
    width, height = IMAGE_SIZE
    for n in range(count):
        folder = root / "test" / f"class_{n % NUM_CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
            folder / f"{n:05d}.jpg", quality=90)
    return root


def predecode(model: EncoderModel, source: ImageFolderSplit, batch_size: int
              ) -> list[torch.Tensor]:
    """Every image of ``source`` decoded, transformed and stacked into batches."""
    tensors = []
    for path in source.paths:
        with Image.open(path) as img:
            tensors.append(model.image_transform(img.convert("RGB")))
    return [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (DataLoader workers), all threads."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_raw(model: EncoderModel, batches: list[torch.Tensor]) -> tuple[float, float]:
    """(wall, CPU) seconds of the forward pass over all ``batches``, after one untimed
    warm-up batch."""
    with torch.inference_mode():
        model.encode_image(batches[0])
        cpu, start = _cpu_seconds(), time.perf_counter()
        for batch in batches:
            model.encode_image(batch)
        return time.perf_counter() - start, _cpu_seconds() - cpu


def time_pipeline(model: EncoderModel, source: ImageFolderSplit, workers: int,
                  batch_size: int) -> tuple[float, float]:
    """(wall, CPU) seconds of ``encode_images`` over ``source``, no feature cache, whole call
    (worker start-up and shut-down included)."""
    ctx = RunContext(device=torch.device("cpu"), batch_size=batch_size, workers=workers,
                     cache=None)
    cpu, start = _cpu_seconds(), time.perf_counter()
    encoded = encode_images(model, source, ctx, split="bench")
    wall = time.perf_counter() - start
    # Workers are joined when the loader is exhausted, so their CPU time is counted by now.
    cpu = _cpu_seconds() - cpu
    if len(encoded.indices) != len(source):
        raise RuntimeError(f"encoded {len(encoded.indices)} of {len(source)} images")
    return wall, cpu


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    from machine_info import cpu_name

    cpu = cpu_name()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "pillow": PIL.__version__, "itra_bench": itra_bench.__version__,
            "cuda": torch.cuda.is_available(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table and write the JSON report; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="JPEGs to generate")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="DataLoader worker counts to measure the pipeline with")
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1],
                        help="torch intra-op thread counts of the main process (the forward "
                             "pass) to measure; DataLoader workers always use one each")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs per setting; the median is reported")
    parser.add_argument("--data", type=Path,
                        help="reuse (or create) the JPEG folder here instead of a temp dir")
    parser.add_argument("--out", type=Path, default=Path("bench_pipeline.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="itra-bench-pipeline-") as tmp:
        root = args.data or Path(tmp)
        if not (root / "test").is_dir():
            print(f"writing {args.images} JPEGs to {root} ...", file=sys.stderr)
            make_image_folder(root, args.images)
        source = ImageFolderSplit(root, "test")
        model = ResNet18Features().eval()
        batches = predecode(model, source, args.batch_size)

        load_before = os.getloadavg()
        rows: list[dict[str, Any]] = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            # Raw and pipeline runs alternate so that drift in machine load hits both alike.
            # (mode, workers) -> [(wall, cpu)]
            settings = [("raw", None), *(("pipeline", w) for w in args.workers)]
            runs: dict[tuple[str, int | None], list[tuple[float, float]]] = {
                s: [] for s in settings}
            for _ in range(args.repeats):
                for mode, workers in settings:
                    if mode == "raw":
                        timed = time_raw(model, batches)
                    else:
                        timed = time_pipeline(model, source, workers, args.batch_size)
                    runs[mode, workers].append(timed)
            for (mode, workers), timed in runs.items():
                wall = statistics.median(w for w, _ in timed)
                cpu = statistics.median(c for _, c in timed)
                rows.append({"threads": threads, "mode": mode,
                             "workers": workers, "images_per_s": len(source) / wall,
                             "cpu_ms_per_image": 1000 * cpu / len(source),
                             "wall_seconds": [w for w, _ in timed],
                             "cpu_seconds": [c for _, c in timed]})
            raw_ips = rows[-len(runs)]["images_per_s"]
            for row in rows[-len(runs):]:
                row["ratio_same_threads"] = row["images_per_s"] / raw_ips
        load_after = os.getloadavg()

    best_raw = max(r["images_per_s"] for r in rows if r["mode"] == "raw")
    for r in rows:
        r["ratio_best_raw"] = r["images_per_s"] / best_raw

    print(f"\n{len(source)} JPEGs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, batch {args.batch_size}, "
          f"ResNet-18 fp32 CPU, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"{'threads':>7} {'mode':>12} {'workers':>7} {'images/s':>9} {'vs raw@thr':>10} "
          f"{'vs best raw':>11} {'CPU ms/img':>10}")
    for r in rows:
        workers = "-" if r["workers"] is None else str(r["workers"])
        print(f"{r['threads']:>7} {r['mode']:>12} {workers:>7} {r['images_per_s']:>9.1f} "
              f"{r['ratio_same_threads']:>10.3f} {r['ratio_best_raw']:>11.3f} "
              f"{r['cpu_ms_per_image']:>10.1f}")

    report = {"benchmark": "pipeline_vs_raw_forward", "command": sys.argv,
              "images": len(source), "image_size": list(IMAGE_SIZE),
              "batch_size": args.batch_size, "repeats": args.repeats,
              "model": "torchvision resnet18 (random init, fc=Identity), fp32",
              "transform": "Resize(256) CenterCrop(224) ToTensor Normalize(ImageNet)",
              "machine": machine(), "load_average_before": load_before,
              "load_average_after": load_after, "best_raw_images_per_s": best_raw, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
