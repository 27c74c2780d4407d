"""The quick commands (``--help``, ``list``, ``results``) never import the deep-learning stack:
a user browsing tasks or collating results does not wait seconds for torch to load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "open_clip", "transformers", "sentence_transformers", "timm")
MARK = "HEAVY-MODULES:"

# Runs the console entry point as `itra-bench ARGS` does, then reports which heavy modules
# ended up imported (after main returned, so lazy imports in the command count too).
_PROBE = f"""
import json, sys
from itra_bench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print({MARK!r} + json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def imported_heavy(*args: str | Path) -> tuple[int, list[str], str]:
    """Run ``itra-bench ARGS`` in a fresh interpreter: its exit code, the heavy modules it
    imported, and its output."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("ITRA_BENCH_PLUGINS", None)
    proc = subprocess.run([sys.executable, "-c", _PROBE, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(MARK)]
    assert lines, f"the probe did not finish: {proc.stderr[-3000:]}"
    report = json.loads(lines[-1][len(MARK):])
    return report["code"], report["heavy"], proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [
    ("--help",),
    ("run", "--help"),
    ("list", "models"),
    ("list", "losses"),
    ("list", "tasks"),
    ("list", "suites"),
    ("list", "plugins"),
], ids=" ".join)
def test_quick_commands_do_not_import_torch(args):
    code, heavy, output = imported_heavy(*args)
    assert code == 0, output[-3000:]
    assert heavy == [], f"`itra-bench {' '.join(args)}` imported {heavy}"


@pytest.mark.slow
def test_results_command_does_not_import_torch(cli, tmp_path):
    out = tmp_path / "out"
    made = cli("run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks",
               "digits-knn", "--output", out, "--cache-dir", tmp_path / "cache",
               "--workers", "0", "--no-progress")
    assert made.code == 0, made
    code, heavy, output = imported_heavy("results", out)
    assert code == 0, output[-3000:]
    assert "digits-knn" in output
    assert heavy == [], f"`itra-bench results` imported {heavy}"

