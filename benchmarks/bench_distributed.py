"""Sharded image encoding under ``torchrun``: throughput and rank 0's memory.

Two questions about ``itra_bench.encoding.encode_images`` in a distributed job (each rank
encodes a contiguous share of every chunk's batches; each chunk is gathered on every rank with
``gather_rows``):

1. **Throughput.** The same JPEGs and model as ``bench_pipeline.py`` (torchvision ResNet-18,
   random init, 512-d), encoded by *2 gloo processes x 1 intra-op thread* and by *1 process x
   2 threads* (``workers=0`` in both, so each process decodes its own share on its own
   thread). Both variants run in fresh processes (the single process also under torchrun,
   with ``--nproc-per-node 1``); each warms the model up with one untimed batch, then times
   the whole ``encode_images`` call from a barrier. Variants alternate; medians over
   ``--repeats``. The time spent inside the collectives ``encode_images`` calls
   (``gather_objects``, ``gather_rows``) is measured by wrapping them in the child process
   (the library is not edited); before each ``gather_objects`` the wrapper waits at a
   barrier, timed apart, so *wait* (a rank idle until the slower one arrives) and *transfer*
   (the collective itself) are reported separately.
2. **Memory.** Rank 0's peak RSS when a split of ``--rows`` (default 1M) rows is encoded by
   K = 1, 2, 4 processes, with a stand-in source and model so that 1M rows take seconds: the
   source yields 1x1 RGB images that carry their index in their pixel, the transform turns
   one into a 3-vector, the model maps it to ``--dim`` features with a fixed matrix. Peak
   RSS is ``VmHWM`` of ``/proc/self/status``, reset (``clear_refs``) after start-up, so
   "above start" is the encoding's own peak. The RSS after the last gather (every chunk
   held) is recorded too, to tell the gathered chunks from the final concatenation.

Usage::

    python benchmarks/bench_distributed.py --images 256 --repeats 3 --rows 1000000 \\
        --procs 1 2 4 --out bench_distributed.json

Needs ``torch.distributed`` with gloo; runs children with ``python -m torch.distributed.run
--standalone``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_pipeline import (  # noqa: E402  (sibling script, not a package)
    IMAGE_SIZE,
    ResNet18Features,
    machine,
    make_image_folder,
)

from itra_bench.datasets.image_source import ImageSource  # noqa: E402
from itra_bench.model import IMAGE, EncoderModel  # noqa: E402


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _Timers:
    """Wraps the collectives ``itra_bench.encoding`` imported, recording seconds spent."""

    def __init__(self) -> None:
        self.wait = self.transfer = 0.0
        self.rss_after_last_gather_kib = 0

    def install(self) -> None:
        import torch.distributed as dist

        import itra_bench.encoding as enc

        gather_objects, gather_rows = enc.gather_objects, enc.gather_rows

        # *rest: the library may pass more (e.g. a label naming the collective).
        def timed_objects(value: Any, world: Any, *rest: Any, **kw: Any) -> list[Any]:
            if world.size > 1:
                start = time.perf_counter()
                dist.barrier()
                self.wait += time.perf_counter() - start
            start = time.perf_counter()
            try:
                return gather_objects(value, world, *rest, **kw)
            finally:
                self.transfer += time.perf_counter() - start

        def timed_rows(rows: torch.Tensor, world: Any, *rest: Any, **kw: Any) -> torch.Tensor:
            start = time.perf_counter()
            try:
                return gather_rows(rows, world, *rest, **kw)
            finally:
                self.transfer += time.perf_counter() - start
                self.rss_after_last_gather_kib = _status_kib("VmRSS")

        enc.gather_objects, enc.gather_rows = timed_objects, timed_rows


class SyntheticSource(ImageSource):
    """``rows`` 1x1 RGB images whose pixel encodes the row index (decoding costs ~nothing)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.identity = f"bench-synthetic-{rows}"

    def __len__(self) -> int:
        return self.rows

    def open_image(self, index: int) -> Image.Image:
        return Image.new("RGB", (1, 1), (index % 256, (index >> 8) % 256, (index >> 16) % 256))


class PixelToVector:
    """The 1x1 image's pixel as a float 3-vector."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(img, dtype=np.float32).reshape(3))

    def __repr__(self) -> str:
        return "PixelToVector()"


class StandInModel(EncoderModel):
    """A fixed random ``3 -> dim`` linear map: features of real size at no compute."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = torch.randn(3, dim, generator=torch.Generator().manual_seed(0))
        self.modalities = frozenset({IMAGE})
        self.fingerprint = f"bench-standin-{dim}"
        self.image_transform = PixelToVector()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images @ self.weight


def child(args: argparse.Namespace) -> None:
    """One rank of a measured run (started by torchrun); rank 0 writes ``args.out``."""
    import torch.distributed as dist

    from itra_bench.context import RunContext
    from itra_bench.datasets.imagefolder import ImageFolderSplit
    from itra_bench.distributed import gather_objects, init_distributed
    from itra_bench.encoding import encode_images

    torch.set_num_threads(args.threads)
    world = init_distributed("cpu")
    if args.mode == "throughput":
        model = ResNet18Features().eval()
        source = ImageFolderSplit(args.data, "test")
        with torch.inference_mode():  # warm-up outside the timing, as bench_pipeline does
            first = torch.stack([model.image_transform(Image.open(source.paths[0]).convert(
                "RGB"))] * 2)
            model.encode_image(first)
    else:
        model = StandInModel(args.dim).eval()
        source = SyntheticSource(args.rows)
    timers = _Timers()
    timers.install()
    ctx = RunContext(device=torch.device("cpu"), batch_size=args.batch_size, workers=0,
                     cache=None, world=world)
    if world.size > 1:
        dist.barrier()
    rss_start = _status_kib("VmRSS")
    peak_reset = _reset_peak()
    cpu, start = _cpu_seconds(), time.perf_counter()
    encoded = encode_images(model, source, ctx, split="bench")
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    peak = _status_kib("VmHWM")
    mine = {"rank": world.rank, "wall": wall, "cpu": cpu, "wait": timers.wait,
            "transfer": timers.transfer, "rows": len(encoded.indices),
            "features_mib": encoded.features.numel() * 4 / 2**20,
            "rss_start_mib": rss_start / 1024, "peak_mib": peak / 1024,
            "peak_reset": peak_reset,
            "rss_after_last_gather_mib": timers.rss_after_last_gather_kib / 1024,
            "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "checksum": float(encoded.features.double().sum())}
    everyone = gather_objects(mine, world)
    if world.is_main:
        Path(args.out).write_text(json.dumps({"size": world.size, "ranks": everyone}))
    if world.size > 1:
        dist.destroy_process_group()


def run_child(mode: str, procs: int, threads: int, out: Path, extra: list[str]) -> dict:
    """Start ``procs`` ranks of this script under torchrun; rank 0's report."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={procs}", str(Path(__file__).resolve()), "--child", mode,
           "--threads", str(threads), "--out", str(out), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both measurements, print tables and write the JSON report; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="JPEGs for the throughput part")
    parser.add_argument("--batch-size", type=int, default=64, help="throughput batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the memory part")
    parser.add_argument("--dim", type=int, default=128, help="feature size of the stand-in")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4],
                        help="process counts of the memory part")
    parser.add_argument("--skip", choices=["throughput", "memory"], action="append",
                        default=[])
    parser.add_argument("--data", type=Path, help="keep the generated JPEGs here")
    parser.add_argument("--out", type=Path, default=Path("bench_distributed.json"))
    # Internal: one rank of a measured run.
    parser.add_argument("--child", choices=["throughput", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.mode = args.child
        child(args)
        return {}

    report: dict[str, Any] = {"benchmark": "distributed_encoding", "command": sys.argv,
                              "machine": machine(), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="itra-bench-dist-") as tmp:
        out = Path(tmp) / "child.json"
        if "throughput" not in args.skip:
            root = args.data or Path(tmp) / "jpegs"
            if not (root / "test").is_dir():
                print(f"writing {args.images} JPEGs to {root} ...", file=sys.stderr)
                make_image_folder(root, args.images)
            variants = {"1 proc x 2 threads": (1, 2), "2 procs x 1 thread": (2, 1)}
            runs: dict[str, list[dict]] = {v: [] for v in variants}
            common = ["--data", str(root), "--batch-size", str(args.batch_size)]
            for repeat in range(args.repeats):
                order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
                for name in order:
                    procs, threads = variants[name]
                    runs[name].append(run_child("throughput", procs, threads, out, common))
                    print(f"  {name}: {runs[name][-1]['ranks'][0]['wall']:.2f} s",
                          file=sys.stderr)
            rows = []
            for name, reps in runs.items():
                walls = [max(r["wall"] for r in rep["ranks"]) for rep in reps]
                cpus = [sum(r["cpu"] for r in rep["ranks"]) for rep in reps]
                rank0 = [rep["ranks"][0] for rep in reps]
                rows.append({
                    "variant": name, "images_per_s": args.images / statistics.median(walls),
                    "images_per_s_each": [args.images / w for w in walls],
                    "cpu_ms_per_image": 1000 * statistics.median(cpus) / args.images,
                    "wait_s": statistics.median(r["wait"] for r in rank0),
                    "transfer_s": statistics.median(r["transfer"] for r in rank0),
                    "wait_s_per_rank": [[r["wait"] for r in rep["ranks"]] for rep in reps],
                    "collective_share": statistics.median(
                        (r["wait"] + r["transfer"]) / r["wall"] for r in rank0),
                    "transfer_share": statistics.median(r["transfer"] / r["wall"]
                                                        for r in rank0),
                    "checksums": sorted({round(rep["ranks"][0]["checksum"], 3)
                                         for rep in reps}),
                    "wall_s": walls, "cpu_s": cpus})
            ratio = rows[1]["images_per_s"] / rows[0]["images_per_s"]
            paired = [rows[0]["wall_s"][i] / rows[1]["wall_s"][i] for i in range(args.repeats)]
            report["throughput"] = {"images": args.images, "image_size": list(IMAGE_SIZE),
                                    "batch_size": args.batch_size, "repeats": args.repeats,
                                    "rows": rows, "ratio_2x1_over_1x2": ratio,
                                    "paired_ratios": paired}
            print(f"\nthroughput: {args.images} JPEGs, ResNet-18 fp32, batch {args.batch_size}")
            print(f"{'variant':>20} {'images/s':>9} {'CPU ms/img':>10} {'wait s':>7} "
                  f"{'transfer s':>10} {'collective share':>16}")
            for r in rows:
                print(f"{r['variant']:>20} {r['images_per_s']:>9.2f} "
                      f"{r['cpu_ms_per_image']:>10.1f} {r['wait_s']:>7.3f} "
                      f"{r['transfer_s']:>10.4f} {r['collective_share']:>16.4f}")
            print(f"2x1 / 1x2 = {ratio:.3f} (paired per repeat: "
                  f"{', '.join(f'{p:.3f}' for p in paired)})")
        if "memory" not in args.skip:
            mem = []
            for procs in args.procs:
                rep = run_child("memory", procs, 1, out,
                                ["--rows", str(args.rows), "--dim", str(args.dim),
                                 "--batch-size", "1024"])
                r0 = rep["ranks"][0]
                mem.append({"procs": procs, **{k: r0[k] for k in (
                    "wall", "rows", "features_mib", "rss_start_mib", "peak_mib",
                    "rss_after_last_gather_mib", "ru_maxrss_mib", "peak_reset", "checksum")},
                    "peak_above_start_mib": r0["peak_mib"] - r0["rss_start_mib"],
                    "other_ranks_peak_mib": [r["peak_mib"] for r in rep["ranks"][1:]]})
                print(f"  memory K={procs}: peak {r0['peak_mib']:.0f} MiB", file=sys.stderr)
            report["memory"] = {"rows": args.rows, "dim": args.dim, "runs": mem}
            print(f"\nmemory: {args.rows:,} rows x {args.dim} float32, rank 0")
            print(f"{'K':>3} {'features MiB':>12} {'start MiB':>9} {'peak MiB':>9} "
                  f"{'above start':>11} {'after last gather':>17} {'s':>6}")
            for m in mem:
                print(f"{m['procs']:>3} {m['features_mib']:>12.0f} {m['rss_start_mib']:>9.0f} "
                      f"{m['peak_mib']:>9.0f} {m['peak_above_start_mib']:>11.0f} "
                      f"{m['rss_after_last_gather_mib']:>17.0f} {m['wall']:>6.1f}")
    report["load_average_after"] = os.getloadavg()
    print(f"load average (1 min) before {report['load_average_before'][0]:.2f}, "
          f"after {report['load_average_after'][0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
