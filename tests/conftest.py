import sys
from pathlib import Path

import pytest

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep every test's feature cache and plugin env var private."""
    monkeypatch.delenv("ITRA_BENCH_PLUGINS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The `demo` model trains on first use; never into the user's own cache.
    monkeypatch.setenv("ITRA_BENCH_DEMO_DIR", str(tmp_path / "demo-cache"))
    yield


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


def _in_process(capsys, main):
    """A runner of the console entry point ``main``: returns code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def train(capsys):
    """Run ``itra-train`` in-process; returns code, stdout and stderr."""
    from itra_train.cli import main

    return _in_process(capsys, main)


@pytest.fixture
def cli(capsys, tmp_path):
    """Run ``itra-bench`` in-process; returns code, stdout and stderr (wide, no colour)."""
    from itra_bench.cli import main

    return _in_process(capsys, main)


@pytest.fixture
def quick_network_retries(monkeypatch):
    """Three tries of a remote read, a few milliseconds apart, online: tests exercise the
    retries, not patience. Set in os.environ, so forked DataLoader workers see them too."""
    monkeypatch.setenv("ITRA_BENCH_NET_ATTEMPTS", "3")
    monkeypatch.setenv("ITRA_BENCH_NET_BACKOFF", "0.01")
    monkeypatch.setenv("ITRA_BENCH_NET_TIMEOUT", "10")
    monkeypatch.delenv("ITRA_BENCH_OFFLINE", raising=False)


@pytest.fixture(autouse=True)
def _wide_plain_console(monkeypatch):
    # Rich wraps long messages at the terminal width; tests match on whole phrases.
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is visible (CI has no GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
