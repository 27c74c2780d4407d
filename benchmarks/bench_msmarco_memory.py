"""Peak memory of MS MARCO passage encoding as the collection grows (10k, 100k, 1M passages).

Each measurement runs in a fresh subprocess, which reports its peak resident memory (VmHWM
from /proc/self/status; ``ru_maxrss`` of the reaped child is read as a cross-check):

- ``stream``: what ``msmarco-passage-dev`` does: scan ``collection.tsv`` (pids to disk), then
  read it line by line, encode in batches and write each batch into the float16
  :class:`itra_bench.tasks.msmarco.passage_store.PassageStore`; then (a second figure) search
  it exactly with 100 queries, block by block.
- ``in-memory`` (baseline): the collection read into a list and encoded with
  ``itra_bench.encoding.encode_texts``, which keeps every float32 embedding in memory.

The model is a TINY weight-free stand-in, not a real text encoder: each word is hashed
(crc32) into one of 30,000 rows of a fixed random 384 x float32 table and a passage is the mean
of its words' rows (``torch.nn.EmbeddingBag``). It has MiniLM's output size (384), so store
sizes and the memory that embeddings take are those of all-MiniLM-L6-v2, at a speed that lets
1M passages run in about a minute on 2 cores. Memory used by a real model's weights and
activations is constant in the collection size, so it would not change the ratios.

    python benchmarks/bench_msmarco_memory.py                       # 10k, 100k, 1M
    python benchmarks/bench_msmarco_memory.py --sizes 10000 100000 --baseline-max 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

DIM = 384
VOCAB = 30_000


def generate(path: Path, n: int, seed: int = 0) -> None:
    """``n`` short passages (8-40 words from a 5,000-word vocabulary) in collection.tsv form."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i:04d}" for i in range(5000)])
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, n, 10_000):
            count = min(10_000, n - start)
            lengths = rng.integers(8, 41, size=count)
            tokens = words[rng.integers(0, len(words), size=int(lengths.sum()))]
            ends = np.cumsum(lengths)
            lines = [f"{start + i}\t{' '.join(tokens[e - ln:e])}\n"
                     for i, (e, ln) in enumerate(zip(ends, lengths, strict=True))]
            f.write("".join(lines))


def tiny_model():  # -> EncoderModel
    """The hashed bag-of-words text encoder described in the module docstring."""
    import torch

    from itra_bench.model import TEXT, EncoderModel

    class HashedBagOfWords(EncoderModel):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.bag = torch.nn.EmbeddingBag(VOCAB, DIM, mode="mean")
            with torch.no_grad():
                self.bag.weight.copy_(torch.randn(VOCAB, DIM, generator=g))
            self.modalities = frozenset({TEXT})
            self.fingerprint = "bench-hashed-bow-384"
            self.name = "hashed-bow"

        def encode_text(self, texts: list[str]) -> torch.Tensor:
            ids: list[int] = []
            offsets: list[int] = []
            for t in texts:
                offsets.append(len(ids))
                ids.extend(zlib.crc32(w.encode()) % VOCAB for w in t.split())
            return self.bag(torch.tensor(ids), torch.tensor(offsets))

    return HashedBagOfWords().eval()


def peak_rss_mib() -> float:
    """VmHWM of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """VmRSS of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so a peak covers one phase only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(mode: str, collection: Path, store_dir: Path, batch_size: int) -> dict:
    """One measurement (run in a fresh process); returns its figures."""
    import torch

    from itra_bench.context import RunContext
    from itra_bench.tasks.msmarco.passage_store import PassageStore

    torch.set_num_threads(1)
    model = tiny_model()
    ctx = RunContext(batch_size=batch_size)
    # Importing torch and friends peaks above what they keep: reset the high-water mark so the
    # phase peak is the encoding's own (the whole-process peak is reported too).
    startup_peak = peak_rss_mib()
    reset_peak()
    before = current_rss_mib()
    t0 = time.perf_counter()
    if mode == "in-memory":
        from itra_bench.encoding import encode_texts
        from itra_bench.tasks.msmarco.readers import iter_collection

        texts = [text for _, text in iter_collection(collection)]
        features = encode_texts(model, texts, ctx, "encode passages")
        return {"mode": mode, "passages": len(features), "baseline_mib": before,
                "startup_peak_mib": startup_peak,
                "peak_mib": peak_rss_mib(), "encode_s": time.perf_counter() - t0}

    from itra_bench.tasks.msmarco.plugin import encode_collection
    from itra_bench.tasks.msmarco.ranking import search_inner_product
    from itra_bench.tasks.msmarco.readers import scan_collection

    store = PassageStore(store_dir, "bench")
    store_dir.mkdir(parents=True, exist_ok=True)
    scan = store_dir / "scan-pids.i64"
    count = scan_collection(collection, scan)
    store.start(np.memmap(scan, dtype=np.int64, mode="r", shape=(count,)))
    encode_collection(model, collection, store, ctx)
    encode_s = time.perf_counter() - t0
    encode_peak = peak_rss_mib()
    queries = np.random.default_rng(1).standard_normal((100, DIM)).astype(np.float32)
    t1 = time.perf_counter()
    reset_peak()
    search_inner_product(store, queries, 1000, block_rows=65_536)
    return {"mode": mode, "passages": count, "baseline_mib": before, "peak_mib": encode_peak,
            "startup_peak_mib": startup_peak,
            "search_peak_mib": peak_rss_mib(), "encode_s": encode_s,
            "search_s": time.perf_counter() - t1,
            "store_mib": store.embeddings_path.stat().st_size / 2**20}


def measure(mode: str, collection: Path, store_dir: Path, batch_size: int) -> dict:
    """Run :func:`child` in a fresh interpreter; adds the parent's view of its peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(collection), str(store_dir),
         str(batch_size)], check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the maximum over all reaped children so far: only a new
    # maximum identifies this child's peak.
    result["ru_maxrss_children_mib"] = after / 1024 if after > before else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--baseline-max", type=int, default=1_000_000,
                        help="run the in-memory baseline only up to this many passages")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_msmarco_") as tmp:
        for n in args.sizes:
            collection = Path(tmp) / f"collection-{n}.tsv"
            t0 = time.perf_counter()
            generate(collection, n)
            print(f"{n:>9,} passages: generated {collection.stat().st_size / 2**20:.0f} MiB "
                  f"in {time.perf_counter() - t0:.1f} s", flush=True)
            modes = ["stream"] + (["in-memory"] if n <= args.baseline_max else [])
            for mode in modes:
                r = measure(mode, collection, Path(tmp) / f"store-{n}", args.batch_size)
                r["collection_mib"] = collection.stat().st_size / 2**20
                rows.append(r)
                extra = (f", search peak {r['search_peak_mib']:.0f} MiB "
                         f"({r['search_s']:.1f} s), store {r['store_mib']:.0f} MiB"
                         if mode == "stream" else "")
                print(f"  {mode:>9}: peak RSS {r['peak_mib']:.0f} MiB (RSS at start "
                      f"{r['baseline_mib']:.0f}, import peak {r['startup_peak_mib']:.0f}), "
                      f"encode {r['encode_s']:.1f} s "
                      f"({r['passages'] / r['encode_s']:,.0f} passages/s){extra}", flush=True)
            Path(collection).unlink()
            for f in (Path(tmp) / f"store-{n}").glob("*"):
                f.unlink()

    for mode in ("stream", "in-memory"):
        by_size = {r["passages"]: r for r in rows if r["mode"] == mode}
        if len(by_size) >= 2:
            small, large = by_size[min(by_size)], by_size[max(by_size)]
            grow = [r["peak_mib"] - r["baseline_mib"] for r in (large, small)]
            print(f"{mode}: peak RSS {large['passages']:,} / {small['passages']:,} passages = "
                  f"{large['peak_mib'] / small['peak_mib']:.2f} (above RSS at start: "
                  f"{grow[0]:.0f} vs {grow[1]:.0f} MiB)")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
          f"{platform.python_version()}, numpy {np.__version__}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, mode, collection, store_dir, batch = sys.argv
        print(json.dumps(child(mode, Path(collection), Path(store_dir), int(batch))))
    else:
        main()
