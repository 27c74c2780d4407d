"""Temp files of atomic writes: a run killed while one exists (SIGKILL, a lost node) leaves it
behind, and the next run removes it, in the feature cache and in the results folder; a temp
file whose writer is alive (another run sharing the folder) is never removed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_resumable_encoding import make_pets

HELPERS = Path(__file__).parent / "helpers"

#: Runs ``itra-bench`` (argv[2:]) and SIGKILLs itself the moment a finished temp file is to be
#: renamed over a file whose name matches the regex argv[1]: the temp file is then complete
#: on disk and its writer dead, as after a kill at that instant.
KILLED_AT_RENAME = """
import os, re, signal, sys
from pathlib import Path
target = re.compile(sys.argv[1])
rename = os.replace
def replace(src, dst, *args, **kwargs):
    if Path(src).name.endswith(".tmp") and target.fullmatch(Path(dst).name):
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(src, dst, *args, **kwargs)
os.replace = replace
from itra_bench.cli import main
sys.exit(main(sys.argv[2:]))
"""

#: Atomically writes argv[1], stopping half-way (``writing`` on stdout) until a line arrives
#: on stdin: a writer alive while the test runs, or killed there by the test.
WRITER = """
import sys
from itra_bench.atomic_io import atomic_write
def write(f):
    f.write(b"half")
    f.flush()
    print("writing", flush=True)
    sys.stdin.readline()
    f.write(b" and the rest")
atomic_write(sys.argv[1], write)
"""


def run_args(data: Path, tmp_path: Path) -> list[str]:
    return ["run", "--model", "pixel", "--plugin", "itra_test_plugin", "--tasks",
            str(data / "t.yaml"), "--data-root", str(data), "--output", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "3", "--workers", "0",
            "--no-progress", "--cache-chunk-rows", "4"]


def subprocess_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HELPERS), os.environ.get("PYTHONPATH", "")]))


def temp_files(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob(".*.tmp"))


class Writer:
    """A process writing ``path`` atomically, stopped half-way with its temp file open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=subprocess_env())
        assert self.proc.stdout.readline().strip() == "writing"
        self.temp, = (p for p in path.parent.glob(f".{path.name}.*.tmp"))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def finish(self) -> None:
        self.proc.communicate("go\n", timeout=30)
        assert self.proc.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("target", [
    r"\d{12}-\d{12}\.pt",          # a chunk of a split being encoded
    r"[0-9a-f]{64}\.pt",           # a cache entry
    r"[0-9a-f]{64}\.json",         # the description beside a cache entry
    r"knn\.samples\.npz",          # the per-sample outcomes beside a result
    r"knn\.json",                  # a result
], ids=["cache-chunk", "cache-entry", "cache-entry-json", "result-samples", "result-json"])
def test_kill_while_a_temp_file_exists_then_rerun_leaves_none(cli, tmp_path, target):
    data = make_pets(tmp_path / "data")
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_RENAME, target,
                             *run_args(data, tmp_path)],
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    left = temp_files(tmp_path / "out", tmp_path / "cache")
    assert [p for p in left if re.fullmatch(rf"\.{target}\.\w+\.tmp", p.name)], left
    rerun = cli(*run_args(data, tmp_path))
    assert rerun.code == 0, rerun
    assert temp_files(tmp_path / "out", tmp_path / "cache") == []
    assert list((tmp_path / "out").rglob("knn.json"))


def test_dead_writers_temp_files_are_removed_live_writers_kept(cli, tmp_path):
    data = make_pets(tmp_path / "data")
    assert cli(*run_args(data, tmp_path)).code == 0
    result, = (tmp_path / "out").rglob("knn.json")
    entry = next((tmp_path / "cache").rglob("*.pt"))
    chunks = entry.parent / f"{entry.stem}.chunks" / "rows-4"
    places = {"result": result.with_name("other.json"),
              "entry": entry.with_name("0" * 64 + ".pt"),
              "chunk": chunks / "000000000000-000000000004.pt"}
    dead = {name: Writer(path) for name, path in places.items()}
    for writer in dead.values():
        writer.kill()
    live = {name: Writer(path.with_name("live-" + path.name)) for name, path in places.items()}
    try:
        # A second run on the same output and cache while the live writers write.
        again = cli(*run_args(data, tmp_path))
        assert again.code == 0, again
        assert [w.temp for w in dead.values() if w.temp.exists()] == []
        assert [w.temp for w in live.values() if not w.temp.exists()] == []
    finally:
        for writer in live.values():
            writer.finish()
    # The live writers finished their writes undisturbed.
    for writer in live.values():
        assert writer.path.read_bytes() == b"half and the rest"
    assert temp_files(tmp_path / "out", tmp_path / "cache") == []


def test_sweep_between_create_and_lock_does_not_break_the_writer(tmp_path, monkeypatch):
    import tempfile

    from itra_bench import atomic_io

    create = tempfile.mkstemp
    swept: list[Path] = []

    def create_then_sweep(*args, **kwargs):
        made = create(*args, **kwargs)
        if not swept:  # a concurrent run's sweep, in the instant before the writer's lock
            swept.extend(atomic_io.remove_stale_temp_files(tmp_path))
        return made

    monkeypatch.setattr(tempfile, "mkstemp", create_then_sweep)
    atomic_io.atomic_write_text(tmp_path / "result.json", "{}\n")
    assert len(swept) == 1
    assert (tmp_path / "result.json").read_text() == "{}\n"
    assert temp_files(tmp_path) == []
