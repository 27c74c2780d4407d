"""The README states what users and plugin authors rely on: its paths exist and its hook table
lists every hook."""

from __future__ import annotations

import re
from pathlib import Path

import itra_bench.hookspecs as hookspecs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TOP = ("itra_bench/", "itra_train/", "plugins/", "tasks/", "vision_benchmark/", "examples/",
       "benchmarks/", "tests/", ".ci/")


def _repo_paths() -> set[str]:
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    code = re.findall(r"`([^`\s]+)`", README)
    found = {p for p in links if not p.startswith(("http://", "https://", "mailto:"))}
    found |= {p for p in code if p.startswith(TOP)}
    # Placeholders (<name>, *.yaml, {a,b}) are patterns, not paths.
    return {p.rstrip(".,:;") for p in found if not re.search(r"[<>*{}\[\]]", p)}


def test_paths_in_readme_exist():
    paths = _repo_paths()
    assert len(paths) > 5  # the pattern finds the README's paths at all
    missing = sorted(p for p in paths if not (ROOT / p.split("::")[0]).exists())
    assert missing == []


def test_hook_table_lists_every_hook():
    hooks = sorted(n for n in dir(hookspecs) if n.startswith("itra_bench_"))
    section = README[README.index("## Writing a plugin"):]
    table = section[:section.index("\n\n", section.index("| hook |"))]
    assert [h for h in hooks if f"`{h}(" not in table] == []


def test_demo_figures_are_found_and_name_one_demo():
    """The demo's figures (held to a real run of the demo by test_train.py's slow demo test)
    are where the parser looks, the quick start, the demo section and the `compare` table's
    epoch 10 quote one run, and every demo cache path names the current DEMO_VERSION."""
    from readme_figures import parse

    from itra_train.demo import DEMO_VERSION

    figures = parse(README)
    assert figures.demo["digits-zeroshot"] == figures.quick_start["digits-zeroshot"][0]
    for task, score in figures.demo.items():
        # One decimal in the text, two in the table: the same score.
        assert abs(float(figures.compare[task]["b"]) - float(score)) <= 0.05 + 1e-9, task
    assert set(re.findall(r"demo-v\d+", README)) == {f"demo-{DEMO_VERSION}"}
