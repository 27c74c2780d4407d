"""The quick commands (``--help``, ``list``, ``results``) never import the deep-learning stack:
a user browsing tasks or collating results does not wait seconds for torch to load. Nor do
they import numpy or PIL (loading the task plugins must not), and ``--help`` reads no task
file or dataset card (it needs only the plugins' subcommands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "open_clip", "transformers", "sentence_transformers", "timm")
#: Not deep learning, but ~0.3 s of imports that listing tasks does not need.
ARRAYS = ("numpy", "PIL")
MARK = "HEAVY-MODULES:"
EXAMPLE = Path(__file__).parent.parent / "examples" / "itra-bench-example-plugin"

# Runs the console entry point as `itra-bench ARGS` does, then reports which heavy modules
# ended up imported (after main returned, so lazy imports in the command count too) and how
# many YAML documents were parsed.
_PROBE = f"""
import json, sys
import yaml
parsed = []
def _counting(parse):
    def wrapper(*args, **kwargs):
        parsed.append(1)
        return parse(*args, **kwargs)
    return wrapper
yaml.load, yaml.safe_load = _counting(yaml.load), _counting(yaml.safe_load)
from itra_bench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
arrays = sorted(m for m in {ARRAYS!r} if m in sys.modules)
report = {{"code": code, "heavy": heavy, "arrays": arrays, "yaml": len(parsed)}}
print({MARK!r} + json.dumps(report), file=sys.stderr)
"""


def probe(*args: str | Path, pythonpath: Path | None = None) -> tuple[dict, str]:
    """Run ``itra-bench ARGS`` in a fresh interpreter: what it imported and parsed (exit
    code, heavy modules, numpy/PIL, YAML documents), and its output."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("ITRA_BENCH_PLUGINS", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath),
                                                          env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _PROBE, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(MARK)]
    assert lines, f"the probe did not finish: {proc.stderr[-3000:]}"
    return json.loads(lines[-1][len(MARK):]), proc.stdout + proc.stderr


def imported_heavy(*args: str | Path) -> tuple[int, list[str], str]:
    """Run ``itra-bench ARGS`` in a fresh interpreter: its exit code, the heavy modules it
    imported, and its output."""
    report, output = probe(*args)
    return report["code"], report["heavy"], output


QUICK = [
    ("--help",),
    ("run", "--help"),
    ("list", "models"),
    ("list", "losses"),
    ("list", "tasks"),
    ("list", "suites"),
    ("list", "plugins"),
]


@pytest.mark.parametrize("args", QUICK, ids=" ".join)
def test_quick_commands_do_not_import_torch(args):
    report, output = probe(*args)
    assert report["code"] == 0, output[-3000:]
    assert report["heavy"] == [], f"`itra-bench {' '.join(args)}` imported {report['heavy']}"
    assert report["arrays"] == [], f"`itra-bench {' '.join(args)}` imported {report['arrays']}"
    if args[-1] == "--help":
        # The subcommands come from itra_bench_commands alone: no task file or card is read.
        assert report["yaml"] == 0, f"`itra-bench {' '.join(args)}` parsed YAML"
    else:
        # Every other command loads every kind (so a clash stops it at start-up): the
        # shipped task files and cards are read.
        assert report["yaml"] >= 39


@pytest.mark.slow
def test_example_plugin_loads_without_torch():
    # The example shows plugin authors the pattern: torch is imported in run(), not at the
    # top of the task module.
    report, output = probe("list", "tasks", "--plugin", "itra_bench_example_plugin.plugin",
                           pythonpath=EXAMPLE)
    assert report["code"] == 0, output[-3000:]
    assert "example-digits-centroid" in output and "imagenette" in output
    assert report["heavy"] == [] and report["arrays"] == [], report


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
