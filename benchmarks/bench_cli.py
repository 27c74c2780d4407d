"""Start-up time of the quick commands: ``itra-bench --help``, ``list tasks`` and ``results``.

Each command runs in a fresh process, the variants alternated (the order rotates every
repeat) so that load on the machine hits all of them alike; wall time and CPU time (user +
system of the child, from ``resource.getrusage(RUSAGE_CHILDREN)`` deltas) are reported as
medians with their min-max spread, and as ratios to ``python -c pass`` and to clip-benchmark's
``--help`` (when ``clip_benchmark`` imports; skipped with a note otherwise).

    python benchmarks/bench_cli.py --results RESULTS_FOLDER --repeats 7 --out bench_cli.json
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
import time
from pathlib import Path


def _console_script(name: str) -> list[str]:
    """The command running console script ``name`` of this interpreter's environment."""
    path = Path(sys.executable).parent / name
    return [str(path)] if path.exists() else [shutil.which(name) or name]


def _timed(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit code of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    code = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, "COLUMNS": "200"}).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, code


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table and write the JSON report; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path,
                        help="a results folder for `itra-bench results` (left out if not given)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench_cli.json"))
    args = parser.parse_args(argv)

    bench = _console_script("itra-bench")
    variants: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "itra-bench --help": [*bench, "--help"],
        "itra-bench list tasks": [*bench, "list", "tasks"],
    }
    notes: list[str] = []
    if args.results is not None:
        # --out to a scratch folder: the benchmark must not rewrite the user's leaderboard.
        scratch = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_cli_leaderboard"
        scratch.mkdir(exist_ok=True)
        variants["itra-bench results"] = [*bench, "results", str(args.results), "--out",
                                          str(scratch)]
    probe = subprocess.run([sys.executable, "-c", "import clip_benchmark.cli"],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        variants["clip_benchmark --help"] = [sys.executable, "-m", "clip_benchmark.cli",
                                             "--help"]
    else:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        notes.append(f"clip_benchmark --help skipped: it does not import ({last})")

    names = list(variants)
    for name in names:  # one untimed run each: disk caches warm for every variant alike
        _timed(variants[name])
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order.reverse()
        for name in order:
            wall, cpu, code = _timed(variants[name])
            if code != 0:
                raise SystemExit(f"{name} exited with {code}")
            walls[name].append(wall)
            cpus[name].append(cpu)

    base = "python -c pass"
    ref = "clip_benchmark --help" if "clip_benchmark --help" in names else None
    rows = {}
    for name in names:
        w, c = _summary(walls[name]), _summary(cpus[name])
        row = {"wall_s": w, "cpu_s": c,
               "wall_vs_python": w["median"] / statistics.median(walls[base]),
               "cpu_vs_python": c["median"] / statistics.median(cpus[base])}
        if ref:
            row["wall_vs_clip_benchmark"] = w["median"] / statistics.median(walls[ref])
            row["cpu_vs_clip_benchmark"] = c["median"] / statistics.median(cpus[ref])
        rows[name] = row
    report = {"repeats": args.repeats, "loadavg": os.getloadavg(), "python": sys.version,
              "commands": {n: variants[n] for n in names}, "results": rows, "notes": notes}

    print(f"{'command':24} {'wall s (min-max)':>22} {'cpu s (min-max)':>22} "
          f"{'wall/py':>8} {'wall/clip':>9}")
    for name, row in rows.items():
        w, c = row["wall_s"], row["cpu_s"]
        clip = f"{row['wall_vs_clip_benchmark']:9.2f}" if ref else f"{'-':>9}"
        print(f"{name:24} {w['median']:7.3f} ({w['min']:.3f}-{w['max']:.3f}) "
              f"{c['median']:7.3f} ({c['min']:.3f}-{c['max']:.3f}) "
              f"{row['wall_vs_python']:8.1f} {clip}")
    print(f"load average: {report['loadavg']}")
    for note in notes:
        print(f"note: {note}")
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
