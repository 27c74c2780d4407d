"""WebDataset shards from a loopback URL against the same shards as local files: evaluation
throughput of one clip-benchmark split, remote / local, measured in one run.

Setup: ``--images`` JPEGs (320x240, quality 90, the recipe of ``bench_pipeline.py``: a
coarse random colour field upsampled plus pixel noise, about 25 kB each) written with
``webdataset.TarWriter`` in clip-benchmark's layout (``ROOT/classnames.txt``,
``ROOT/zeroshot_classification_templates.txt``, ``ROOT/test/nshards.txt``,
``ROOT/test/0.tar ..``; samples ``<key>.jpg`` + ``<key>.cls``), ``--per-shard`` samples a
shard, in a temporary folder. The same folder is served over HTTP on 127.0.0.1 by a server in
a **separate process** (so that its work is not counted as the client's, and does not hold
the benchmark's GIL): ``--server static`` (default) is Python's ``http.server``
(``ThreadingHTTPServer`` + ``SimpleHTTPRequestHandler``, HTTP/1.1, ``Last-Modified`` as the
shards' version), ``--server shard`` is the tests' ``ShardServer``
(``tests/helpers/shard_server.py``: it reads each file whole and hashes it for its ETag on
every request, HEAD included, so it costs the machine more CPU per request than a static
file server).

Each timed run is the whole evaluation-side data path of the split, as ``itra-bench run
--tasks wds:ROOT`` / ``wds:URL`` does it when nothing is cached:

- **construct**: ``WebDatasetSplit(root, "test", access=FolderAccess(records=None))``. Local:
  read the class names and ``nshards.txt``, index the shards. Remote: read the class names
  and ``nshards.txt`` (GET), HEAD every shard (``check``), fetch every shard to a temporary
  folder (``fetch``: 4 shards at a time, fsspec/aiohttp, SHA-256 of the bytes), index them.
  Records are off, so every remote run fetches again (no index is reused).
- **encode**: ``encode_images(model, source, RunContext(cache=None, memory=None, ...))``:
  read each image at its offset, decode, transform (in ``--workers`` DataLoader workers),
  batch, forward.

The ``check`` and ``fetch`` parts of a remote construction are timed by wrapping
``RemoteShards.__init__`` and ``RemoteShards.fetch`` in this process (nothing else changes).
Local and remote runs alternate in every repeat (the order flips each repeat) after an
untimed warm-up (one forward batch, one remote and one local construction: the first remote
one imports fsspec/aiohttp). Reported: median images/s of each variant, the ratio remote /
local paired repeat by repeat (median, min..max), the construction and encoding times, CPU
ms/image (user + system of this process and its reaped DataLoader workers, all threads; the
server's CPU separately, from ``/proc/<pid>/stat``), the bytes fetched (the shards' sizes;
the bytes the server read from the files it served, from ``rchar`` in ``/proc/<pid>/io``:
twice the shards' size for ``--server shard``, which reads a file whole for a HEAD too),
the 1-minute load average before and after, and whether the remote features equal the
local ones.

Usage::

    python benchmarks/bench_wds_remote.py --images 512 --per-shard 64 --batch-size 64 \\
        --workers 1 --threads 2 --repeats 3 --out bench_wds_remote.json
    # a tiny model instead of ResNet-18: the data path's cost with almost no forward pass
    python benchmarks/bench_wds_remote.py --model tiny --images 2048 --per-shard 256
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import io
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
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SPLIT = "test"
NUM_CLASSES = 10
IMAGE_SIZE = (320, 240)  # width, height, as bench_pipeline.py


# -- the server (a child process) ---------------------------------------------------------


def serve(root: Path, kind: str) -> None:
    """Serve ``root`` on 127.0.0.1 (a free port), print the URL, serve until stdin closes."""
    if kind == "shard":
        sys.path.insert(0, str(REPO / "tests" / "helpers"))
        from shard_server import ShardServer

        server = ShardServer(root).start()
        url, stop = server.url, server.close
    else:
        import threading
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        class Handler(SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.daemon_threads = True
        httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                    functools.partial(Handler, directory=str(root)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}"

        def stop() -> None:
            httpd.shutdown()
            httpd.server_close()
    print(url, flush=True)
    sys.stdin.read()  # until the benchmark closes the pipe
    stop()


class ServerProcess:
    """The server child: its URL, and its CPU seconds and the bytes it has read so far."""

    def __init__(self, root: Path, kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(root),
             "--server", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not self.url.startswith("http://"):
            self.close()
            raise RuntimeError(f"the {kind} server did not start (said {self.url!r})")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server (all its threads), or None if unreadable."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def bytes_read(self) -> int | None:
        """Bytes the server has read with read() (``rchar``: the files it served; sockets are
        read with recv(), which ``rchar`` does not count), or None if unreadable."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
                if line.startswith("rchar:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# -- data and models ------------------------------------------------------------------------


def jpeg(rng: Any) -> bytes:
    """One 320x240 JPEG as bench_pipeline.py makes them (about 25 kB)."""
    import numpy as np
    from PIL import Image

    width, height = IMAGE_SIZE
    coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buf, format="jpeg", quality=90)
    return buf.getvalue()


def make_wds(root: Path, count: int, per_shard: int, seed: int = 0) -> dict[str, Any]:
    """A clip-benchmark webdataset folder at ``root`` with one split of ``count`` JPEGs."""
    import numpy as np
    import webdataset

    rng = np.random.default_rng(seed)
    split_dir = root / SPLIT
    split_dir.mkdir(parents=True)
    (root / "classnames.txt").write_text("".join(f"class_{c}\n" for c in range(NUM_CLASSES)))
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    shards = (count + per_shard - 1) // per_shard
    image_bytes = 0
    for n in range(shards):
        with webdataset.TarWriter(str(split_dir / f"{n}.tar")) as sink:
            for i in range(n * per_shard, min(count, (n + 1) * per_shard)):
                data = jpeg(rng)
                image_bytes += len(data)
                sink.write({"__key__": f"s{i:07d}", "jpg": data, "cls": i % NUM_CLASSES})
    (split_dir / "nshards.txt").write_text(f"{shards}\n")
    return {"images": count, "shards": shards, "image_bytes": image_bytes,
            "shard_bytes": sum((split_dir / f"{n}.tar").stat().st_size for n in range(shards))}


def build_model(name: str) -> Any:
    """``resnet18``: bench_pipeline.py's model (torchvision ResNet-18, weights=None, seeded,
    fc=Identity, Resize(256) CenterCrop(224) ToTensor Normalize). ``tiny``: two strided
    convolutions (3->32, 8x8 stride 8; 32->64, 3x3 stride 2) and average pooling, 64-d, with
    the same transform: about the decode's cost, so the data path shows."""
    import torch
    from bench_pipeline import ResNet18Features
    from torch import nn

    model = ResNet18Features()
    if name == "tiny":
        torch.manual_seed(0)
        model.net = nn.Sequential(nn.Conv2d(3, 32, 8, stride=8), nn.ReLU(),
                                  nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        model.fingerprint = "bench-tiny-random-0"
    return model.eval()


# -- timing ---------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (DataLoader workers), all threads."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


#: Seconds spent in RemoteShards.__init__ (text file + HEAD checks) and .fetch, this run.
PHASES: dict[str, float] = {}


def _timed(name: str, method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            PHASES[name] = PHASES.get(name, 0.0) + time.perf_counter() - start
    return wrapper


def instrument() -> None:
    """Time the remote split's checks and fetch (the methods are wrapped, not changed)."""
    from itra_bench.tasks.wds.remote_split import RemoteShards

    RemoteShards.__init__ = _timed("check", RemoteShards.__init__)  # type: ignore[method-assign]
    RemoteShards.fetch = _timed("fetch", RemoteShards.fetch)  # type: ignore[method-assign]


def one_run(variant: str, root: str, model: Any, args: argparse.Namespace,
            server: ServerProcess) -> tuple[dict[str, Any], Any, list[int]]:
    """Construct the split from ``root`` and encode it; the timings, features and targets."""
    import torch

    from itra_bench.context import RunContext
    from itra_bench.encoding import encode_images
    from itra_bench.tasks.wds.folder_access import FolderAccess
    from itra_bench.tasks.wds.webdataset_source import WebDatasetSplit

    gc.collect()
    ctx = RunContext(device=torch.device("cpu"), batch_size=args.batch_size,
                     workers=args.workers, cache=None, memory=None)
    PHASES.clear()
    load = os.getloadavg()[0]
    srv_cpu0, srv_bytes0 = server.cpu_seconds(), server.bytes_read()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    source = WebDatasetSplit(root, SPLIT, access=FolderAccess(records=None))
    cpu1, t1 = cpu_seconds(), time.perf_counter()
    encoded = encode_images(model, source, ctx, split="bench")
    # Workers are joined when the loader is exhausted, so their CPU time is counted by now.
    cpu2, t2 = cpu_seconds(), time.perf_counter()
    srv_cpu1, srv_bytes1 = server.cpu_seconds(), server.bytes_read()
    n = len(source)
    if len(encoded.indices) != n:
        raise RuntimeError(f"{variant}: encoded {len(encoded.indices)} of {n} images")
    fetched = sum(p.stat().st_size for p in source.shards) if variant == "remote" else 0
    targets = list(source.targets)
    del source  # removes a remote split's temporary copy of the shards
    gc.collect()
    run = {"variant": variant, "images": n, "wall_s": t2 - t0, "images_per_s": n / (t2 - t0),
           "construct_s": t1 - t0, "check_s": PHASES.get("check", 0.0),
           "fetch_s": PHASES.get("fetch", 0.0), "encode_s": t2 - t1,
           "encode_images_per_s": n / (t2 - t1), "cpu_s": cpu2 - cpu0,
           "construct_cpu_s": cpu1 - cpu0, "cpu_ms_per_image": 1000 * (cpu2 - cpu0) / n,
           "encode_cpu_ms_per_image": 1000 * (cpu2 - cpu1) / n,
           "cores_busy": (cpu2 - cpu0) / (t2 - t0),
           "shard_bytes_fetched": fetched, "loadavg_1m": load,
           "server_cpu_s": None if srv_cpu0 is None or srv_cpu1 is None
           else srv_cpu1 - srv_cpu0,
           "server_bytes_read": None if srv_bytes0 is None or srv_bytes1 is None
           else srv_bytes1 - srv_bytes0}
    return run, encoded.features, targets


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per variant and the paired remote / local ratios (median, min, max)."""
    med = statistics.median
    local = [r for r in runs if r["variant"] == "local"]
    remote = [r for r in runs if r["variant"] == "remote"]
    ratios = [r["images_per_s"] / c["images_per_s"] for c, r in zip(local, remote, strict=True)]
    enc_ratios = [r["encode_images_per_s"] / c["encode_images_per_s"]
                  for c, r in zip(local, remote, strict=True)]
    cpu_ratios = [r["cpu_ms_per_image"] / c["cpu_ms_per_image"]
                  for c, r in zip(local, remote, strict=True)]
    fetch_share = [r["fetch_s"] / r["wall_s"] for r in remote]
    variants = {}
    for name, sel in (("local", local), ("remote", remote)):
        variants[name] = {key: med(r[key] for r in sel) for key in (
            "images_per_s", "wall_s", "construct_s", "check_s", "fetch_s", "encode_s",
            "encode_images_per_s", "cpu_ms_per_image", "encode_cpu_ms_per_image",
            "construct_cpu_s", "cores_busy")}
        server_cpu = [r["server_cpu_s"] for r in sel if r["server_cpu_s"] is not None]
        variants[name]["server_cpu_s"] = med(server_cpu) if server_cpu else None
    return {
        "variants": variants,
        "ratio_median": med(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "encode_ratio_median": med(enc_ratios), "encode_ratio_min": min(enc_ratios),
        "encode_ratio_max": max(enc_ratios), "cpu_ratio_median": med(cpu_ratios),
        "fetch_share_median": med(fetch_share),
        "shard_bytes_fetched": med(r["shard_bytes_fetched"] for r in remote),
        "server_bytes_read": med(r["server_bytes_read"] or 0 for r in remote),
        "fetch_mb_per_s": med(r["shard_bytes_fetched"] / 1e6 / r["fetch_s"]
                              for r in remote if r["fetch_s"] > 0),
        "loadavg_range": [min(r["loadavg_1m"] for r in runs),
                          max(r["loadavg_1m"] for r in runs)],
        "repeats": len(ratios)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table and write the JSON report; returns the report."""
    from itra_bench.context import default_workers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="JPEGs in the split")
    parser.add_argument("--per-shard", type=int, default=64, help="samples a shard")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="DataLoader workers (default: the CLI's, one per core beyond "
                             "the first)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads of the main process (the forward pass)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each variant, alternating; medians reported")
    parser.add_argument("--model", choices=["resnet18", "tiny"], default="resnet18")
    parser.add_argument("--server", choices=["static", "shard"], default="static",
                        help="http.server's static file handler, or the tests' ShardServer")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write the data (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("bench_wds_remote.json"))
    args = parser.parse_args(argv)

    import torch

    import itra_bench

    torch.set_num_threads(args.threads)
    instrument()
    load_before = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="bench_wds_remote_", dir=args.dir))
    server: ServerProcess | None = None
    try:
        t0 = time.perf_counter()
        root = base / "wds_bench"
        data = make_wds(root, args.images, args.per_shard)
        data["setup_s"] = time.perf_counter() - t0
        print(f"data: {data['images']} JPEGs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, "
              f"{data['image_bytes'] / data['images'] / 1e3:.1f} kB each; {data['shards']} "
              f"shards, {data['shard_bytes'] / 1e6:.1f} MB", file=sys.stderr, flush=True)
        server = ServerProcess(base, args.server)
        url = f"{server.url}/{root.name}"
        model = build_model(args.model)

        # Warm-up, untimed: the forward pass (oneDNN's first call), fsspec/aiohttp's imports
        # and first connection, the tar reader.
        from itra_bench.tasks.wds.folder_access import FolderAccess
        from itra_bench.tasks.wds.webdataset_source import WebDatasetSplit

        with torch.inference_mode():
            model.encode_image(torch.zeros(args.batch_size, 3, 224, 224))
        for where in (url, str(root)):
            warm = WebDatasetSplit(where, SPLIT, access=FolderAccess(records=None))
            warm.read_bytes(0)
            del warm
        gc.collect()

        runs: list[dict[str, Any]] = []
        features: dict[str, Any] = {}
        targets: dict[str, list[int]] = {}
        for rep in range(args.repeats):
            order = ["local", "remote"] if rep % 2 == 0 else ["remote", "local"]
            for variant in order:
                run, feats, labels = one_run(variant, url if variant == "remote" else str(root),
                                             model, args, server)
                run["repeat"] = rep
                runs.append(run)
                features.setdefault(variant, feats)
                targets.setdefault(variant, labels)
                print(f"r{rep} {variant:6}: {run['images_per_s']:6.2f} images/s, construct "
                      f"{run['construct_s']:.2f} s (fetch {run['fetch_s']:.2f} s), encode "
                      f"{run['encode_s']:.2f} s, {run['cpu_ms_per_image']:.1f} CPU ms/img, "
                      f"load {run['loadavg_1m']:.2f}", file=sys.stderr, flush=True)
        load_after = os.getloadavg()
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(base, ignore_errors=True)

    same_targets = targets["local"] == targets["remote"]
    max_diff = float((features["local"] - features["remote"]).abs().max())
    summary = summarise(runs)
    v = summary["variants"]
    mb = 1e6
    print(f"\n{args.images} JPEGs in {data['shards']} shards ({data['shard_bytes'] / mb:.1f} MB), "
          f"{args.model}, batch {args.batch_size}, workers {args.workers}, threads "
          f"{args.threads}, server {args.server}, {summary['repeats']} repeats, "
          f"{os.cpu_count()} cores, torch {torch.__version__}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(per run {summary['loadavg_range'][0]:.2f}..{summary['loadavg_range'][1]:.2f})")
    print(f"{'variant':>7} {'images/s':>9} {'construct s':>11} {'check s':>8} {'fetch s':>8} "
          f"{'encode s':>9} {'encode img/s':>12} {'CPU ms/img':>10} {'server CPU s':>12}")
    for name in ("local", "remote"):
        r = v[name]
        server_cpu = "-" if name == "local" or r["server_cpu_s"] is None \
            else f"{r['server_cpu_s']:.2f}"
        print(f"{name:>7} {r['images_per_s']:>9.2f} {r['construct_s']:>11.3f} "
              f"{r['check_s']:>8.3f} {r['fetch_s']:>8.3f} {r['encode_s']:>9.2f} "
              f"{r['encode_images_per_s']:>12.2f} {r['cpu_ms_per_image']:>10.1f} "
              f"{server_cpu:>12}")
    print(f"remote / local images/s: {summary['ratio_median']:.3f} "
          f"({summary['ratio_min']:.3f}..{summary['ratio_max']:.3f}); encoding only "
          f"{summary['encode_ratio_median']:.3f} ({summary['encode_ratio_min']:.3f}.."
          f"{summary['encode_ratio_max']:.3f}); CPU ms/img remote / local "
          f"{summary['cpu_ratio_median']:.3f}")
    print(f"fetch: {summary['fetch_share_median']:.1%} of a remote run, "
          f"{summary['shard_bytes_fetched'] / mb:.1f} MB of shards at "
          f"{summary['fetch_mb_per_s']:.0f} MB/s; the server read "
          f"{summary['server_bytes_read'] / mb:.1f} MB of files a run")
    print(f"remote features == local: max |diff| {max_diff:.3g}; same labels: {same_targets}")

    from bench_pipeline import machine

    report = {"benchmark": "wds_remote_vs_local", "command": sys.argv,
              "settings": {k: str(val) for k, val in vars(args).items()}, "data": data,
              "model": args.model, "itra_bench": itra_bench.__version__,
              "machine": machine(), "load_average_before": load_before,
              "load_average_after": load_after, "features_max_abs_diff": max_diff,
              "same_targets": same_targets, "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    if "--serve" in sys.argv:
        cli = argparse.ArgumentParser()
        cli.add_argument("--serve", type=Path, required=True)
        cli.add_argument("--server", choices=["static", "shard"], default="static")
        opts = cli.parse_args()
        serve(opts.serve, opts.server)
    else:
        result = main()
        if result["features_max_abs_diff"] != 0 or not result["same_targets"]:
            sys.exit("the remote features or labels differ from the local ones: a bug")
