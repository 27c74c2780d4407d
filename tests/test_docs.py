"""The documentation site (docs/, mkdocs.yml) builds without a warning, and every shell block of
the README and of the pages runs as printed, or says why it cannot run here."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import doc_pages
import pytest
from doc_pages import ROOT

#: What an unmarked block must not need: a GPU or several machines, the network, or data and
#: weights that a test machine does not have. Such a block gets ``<!-- not run: REASON -->``.
NEEDS_MORE = ("torchrun", "srun ", "pip install", "huggingface-cli", "--data-root", "~/w/",
              "~/weights", "~/models", "~/data", "cuda", "train.csv")


def _runnable() -> list[doc_pages.Block]:
    """The shell blocks that run, in reading order, each distinct body once (the README's
    examples repeat the pages')."""
    seen: set[str] = set()
    found = []
    for block in doc_pages.shell_blocks():
        if block.reason is None and block.body not in seen:
            seen.add(block.body)
            found.append(block)
    return found


def test_every_shell_block_runs_or_says_why_not():
    blocks = doc_pages.shell_blocks()
    assert len(blocks) > 30  # the parser finds the pages' blocks at all
    # A reason names what is missing here, in words.
    assert [b.where for b in blocks if b.reason is not None and len(b.reason.split()) < 3] == []
    # Every marker sits right above a shell block (a reason must not drift off its block).
    markers = sum(bool(doc_pages.NOT_RUN.fullmatch(line.strip()))
                  for text in doc_pages.pages().values() for line in text.splitlines())
    assert markers == sum(b.reason is not None for b in blocks)
    unmarked = {b.where: [n for n in NEEDS_MORE if n in b.body] for b in _runnable()}
    assert {where: needs for where, needs in unmarked.items() if needs} == {}, \
        "blocks that need more than a test machine has: mark them <!-- not run: REASON -->"
    # What runs: the demo, a two-model run, `list`, the word-similarity example, `results`,
    # `compare` and `--format`.
    assert len(unmarked) >= 7


@pytest.mark.slow
def test_shell_blocks_run_as_printed(tmp_path):
    """Each unmarked shell block, as printed, in reading order (the site's navigation, then the
    README), in one working folder and one home, as a reader would run them one after
    another; each must exit with 0."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITRA_BENCH_")}
    # The commands of this environment first (`itra-bench`, `itra-train`, `python`).
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               HF_HUB_OFFLINE="1")
    for block in _runnable():
        res = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=work, env=env,
                             capture_output=True, text=True, timeout=1800)
        assert res.returncode == 0, (
            f"{block.where}: exit code {res.returncode}\n{block.body}\n"
            f"stdout: {res.stdout[-3000:]}\nstderr: {res.stderr[-3000:]}")
    # They ran: what the demo run, `compare`'s runs, `results` and `--format` write is there.
    assert (work / "itra-results" / "leaderboard.md").is_file()
    assert (work / "boards" / "leaderboard.csv").is_file()
    assert len(list((work / "epochs").rglob("*.json"))) >= 10
    assert (work / "tasks.json").is_file() and (work / "REPORT.md").is_file()


def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, a page left out of the navigation or
    a name the API reference cannot find fails it. CI builds the site in .ci/run too."""
    if importlib.util.find_spec("mkdocs") is None or \
            importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip('needs the docs extra: pip install -e ".[docs]" (.ci/run builds the site)')
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-5000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    # The reference shows docstrings: evaluate's, and a field of RunSettings read from its
    # `#:` comment by docs/_tools/griffe_docstrings.py.
    assert "Evaluate" in api and "DataLoader worker processes" in api
    assert not re.search(r":(func|class|meth):`", api)  # Sphinx roles became code
