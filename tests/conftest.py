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
    yield
