"""Precision and memory layout on the CPU: ``amp_bf16`` and ``channels_last`` against fp32.

Two parts (issue 13, item 6):

- **metrics** (``--part metrics``): ``itra-bench run --tasks demo`` in fp32 and in
  ``--precision amp_bf16`` on ``--model demo`` (fresh ``--output`` and ``--cache-dir`` each),
  and the absolute change bf16 - fp32 of every metric of every result. For the memory layout,
  the same suite on a random-init convolutional tower (``--layout-model``, default timm's
  tiny ``test_resnet``, cheap on 1797 images; image-only, so zero-shot and retrieval are
  skipped) as the plugins build it (channels_last) and with the layout forced back to
  contiguous (the ``contiguous+`` scheme of ``_contiguous_plugin.py``, loaded with
  ``--plugin``), and the change channels_last - contiguous of every metric.
- **speed** (``--part speed``): image-encoding throughput (images/s, wall) and CPU seconds per
  image (``time.process_time``, all threads) of a random-init torchvision ``resnet50`` (fp32,
  amp_bf16, and both again in channels_last), an open_clip ``ViT-B-32`` image tower (fp32,
  amp_bf16) and, with ``--towers``, an open_clip ``RN50`` image tower (open_clip's
  ModifiedResNet; fp32 contiguous and channels_last), at 224 px on one fixed random batch.
  fp32 runs use ``--batch`` images (32); bf16 runs use ``--bf16-batch`` (2) because bf16
  convolutions are emulated on CPUs without AVX512-BF16/AMX and one batch of 32 costs minutes
  there. Every variant has one untimed warm-up call (also the one whose features are
  compared with fp32: max abs difference of L2-normalised features), then ``--repeats``
  timed calls; the variants alternate within each repeat, so drift in machine load hits all
  of them. Figures: median and min-max; the 1-minute load average before and after.

Usage (about 4 minutes of CPU on 2 cores; the second line about 9)::

    python benchmarks/bench_precision.py --out bench_precision.json
    python benchmarks/bench_precision.py --towers torchvision_resnet50 openclip_RN50 \
        openclip_ViT-B-32 --bf16-batch 4 --layout-model torchvision:mobilenet_v3_small
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def read_metrics(output: Path) -> dict[str, dict[str, float]]:
    """Every result's numeric metrics under an ``--output`` folder, keyed ``task/variant``."""
    found: dict[str, dict[str, float]] = {}
    for path in sorted(output.rglob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and isinstance(doc.get("metrics"), dict):
            found[f"{path.parent.name}/{path.stem}"] = {
                k: float(v) for k, v in doc["metrics"].items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return found


def run_demo(model: str, precision: str, work: Path, extra: list[str]) -> dict[str, Any]:
    """``itra-bench run --tasks demo`` with fresh output and cache folders; metrics and time."""
    output, cache = work / "out", work / "cache"
    cmd = [sys.executable, "-m", "itra_bench.cli", "run", "--model", model, "--tasks", "demo",
           "--device", "cpu", "--precision", precision, "--output", str(output),
           "--cache-dir", str(cache), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])}
    print(f"running itra-bench {' '.join(cmd[4:8])}", file=sys.stderr)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return {"command": " ".join(cmd[1:]), "wall_s": time.perf_counter() - start,
            "metrics": read_metrics(output)}


def metric_changes(base: dict[str, dict[str, float]],
                   other: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``other - base`` for every metric of every result, and the largest absolute change."""
    if set(base) != set(other):
        raise RuntimeError(f"different results: {sorted(base)} vs {sorted(other)}")
    changes = {key: {m: other[key][m] - v for m, v in metrics.items()}
               for key, metrics in base.items()}
    largest = max((abs(d) for m in changes.values() for d in m.values()), default=0.0)
    return {"changes": changes, "max_abs_change": largest}


def metrics_part(args: argparse.Namespace) -> dict[str, Any]:
    """The demo suite in fp32 vs amp_bf16, and a conv tower in contiguous vs channels_last."""
    extra = [arg for name in args.disable_plugin for arg in ("--disable-plugin", name)]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fp32 = run_demo("demo", "fp32", root / "fp32", extra)
        bf16 = run_demo("demo", "amp_bf16", root / "bf16", extra)
        out["demo_amp_bf16"] = {"fp32": fp32, "amp_bf16": bf16,
                                **metric_changes(fp32["metrics"], bf16["metrics"])}
        layout_extra = [*extra, "--random-init", "--plugin", "_contiguous_plugin"]
        cl = run_demo(args.layout_model, "fp32", root / "cl", layout_extra)
        contiguous = run_demo(f"contiguous+{args.layout_model}", "fp32", root / "contig",
                              layout_extra)
        out["layout_channels_last"] = {
            "model": args.layout_model, "contiguous": contiguous, "channels_last": cl,
            **metric_changes(contiguous["metrics"], cl["metrics"])}
    return out


def _towers() -> dict[str, Callable[[], Any]]:
    import open_clip
    import torch
    import torchvision

    def clip_visual(arch: str) -> Any:
        torch.manual_seed(0)
        return open_clip.create_model(arch, pretrained=None).visual.eval()

    def resnet50() -> Any:
        torch.manual_seed(0)
        net = torchvision.models.resnet50()
        net.fc = torch.nn.Identity()
        return net.eval()

    return {"torchvision_resnet50": resnet50, "openclip_RN50": lambda: clip_visual("RN50"),
            "openclip_ViT-B-32": lambda: clip_visual("ViT-B-32")}


TOWERS = ("torchvision_resnet50", "openclip_RN50", "openclip_ViT-B-32")
#: (tower, variant name, bf16, channels_last)
VARIANTS = [
    ("torchvision_resnet50", "fp32", False, False),
    ("torchvision_resnet50", "fp32_channels_last", False, True),
    ("torchvision_resnet50", "amp_bf16", True, False),
    ("torchvision_resnet50", "amp_bf16_channels_last", True, True),
    ("openclip_RN50", "fp32", False, False),
    ("openclip_RN50", "fp32_channels_last", False, True),
    ("openclip_ViT-B-32", "fp32", False, False),
    ("openclip_ViT-B-32", "amp_bf16", True, False),
]


def speed_part(args: argparse.Namespace) -> dict[str, Any]:
    """Throughput, CPU per image and feature change of each (tower, variant)."""
    import torch
    import torch.nn.functional as F

    images = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    towers = {name: make() for name, make in _towers().items() if name in args.towers}
    variants = [v for v in VARIANTS if v[0] in args.towers]

    def forward(tower: str, bf16: bool, channels_last: bool) -> tuple[torch.Tensor, float, float]:
        net = towers[tower]
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net.to(memory_format=fmt)
        x = images[: args.bf16_batch if bf16 else args.batch].contiguous(memory_format=fmt)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            wall, cpu = time.perf_counter(), time.process_time()
            feats = net(x)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return F.normalize(feats.float(), dim=-1), wall, cpu

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    reference: dict[str, torch.Tensor] = {}
    for tower, name, bf16, cl in variants:  # warm-up, and the features compared
        feats, _, _ = forward(tower, bf16, cl)
        reference.setdefault(tower, feats)  # each tower's fp32 contiguous variant comes first
        ref = reference[tower][: len(feats)]
        rows[tower, name] = {"tower": tower, "variant": name,
                             "batch": args.bf16_batch if bf16 else args.batch,
                             "max_abs_feature_diff_vs_fp32": float((feats - ref).abs().max()),
                             "walls": [], "cpus": []}
    for _ in range(args.repeats):
        for tower, name, bf16, cl in variants:
            _, wall, cpu = forward(tower, bf16, cl)
            print(f"{tower} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", file=sys.stderr)
            rows[tower, name]["walls"].append(wall)
            rows[tower, name]["cpus"].append(cpu)
    out = []
    for row in rows.values():
        n = row["batch"]
        walls, cpus = row.pop("walls"), row.pop("cpus")
        row["images_per_s"] = _spread([n / w for w in walls])
        row["cpu_s_per_image"] = _spread([c / n for c in cpus])
        # Each tower's fp32 row comes first, so its figures are there already.
        row["cpu_ratio_vs_fp32"] = (row["cpu_s_per_image"]["median"]
                                    / rows[row["tower"], "fp32"]["cpu_s_per_image"]["median"])
        out.append(row)
    return {"batch": args.batch, "bf16_batch": args.bf16_batch, "repeats": args.repeats,
            "threads": torch.get_num_threads(), "rows": out}


def main() -> None:
    """Run the chosen parts and print (and optionally write) the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "metrics", "speed"), default="all")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bf16-batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--towers", nargs="+", choices=TOWERS,
                        default=["torchvision_resnet50", "openclip_ViT-B-32"],
                        help="which image towers the speed part measures (openclip_RN50 "
                             "adds about 100 CPU seconds)")
    parser.add_argument("--layout-model", default="timm:test_resnet",
                        help="the convolutional tower of the layout part, run with "
                             "--random-init (torchvision:mobilenet_v3_small: about 3 CPU "
                             "minutes more)")
    parser.add_argument("--disable-plugin", action="append", default=[],
                        help="passed on to itra-bench run (a plugin broken in this checkout)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    import torch

    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "torch": torch.__version__, "args": {k: str(v) if isinstance(v, Path) else v
                                             for k, v in vars(args).items()},
        "load_average_before": os.getloadavg()}
    cpu = time.process_time()
    if args.part in ("all", "speed"):
        report["speed"] = speed_part(args)
    if args.part in ("all", "metrics"):
        report["metrics"] = metrics_part(args)
    report["load_average_after"] = os.getloadavg()
    report["benchmark_cpu_s_in_process"] = time.process_time() - cpu
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
