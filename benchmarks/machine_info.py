"""The CPU a benchmark ran on, for the machine block of its report (scripts in this folder
import it as a sibling module: ``python benchmarks/bench_x.py`` puts the folder on the path)."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name from ``/proc/cpuinfo`` (the platform's name elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
