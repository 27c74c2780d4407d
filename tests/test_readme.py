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


def _python_blocks(section: str) -> list[str]:
    """The ```python blocks of the README section headed ``section``, in order."""
    start = README.index(f"\n{section}\n")
    end = README.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", README[start:end if end > 0 else None], re.S)


def test_python_api_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """The code of "## Python API", exactly as printed, runs and gives what it says."""
    blocks = _python_blocks("## Python API")
    assert len(blocks) == 2 and "evaluate(" in blocks[0] and "nn.Module" in blocks[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # the default feature cache, ~/.cache/...
    namespace: dict = {"__name__": "readme"}
    exec(compile("\n".join(blocks), "README.md#python-api", "exec"), namespace)
    out = capsys.readouterr().out
    assert 0 < float(out.splitlines()[0]) <= 1  # print(results.score("digits-knn"))
    assert "digits-zeroshot" in out and "digits-knn" in out  # results.print()
    score = namespace["score"]
    assert (score.task, score.main_score, score.status) == ("digits-knn", "acc1", "done")
    assert score.path.is_file() and score.path.parts[0] == "my-results"
    assert namespace["rows"][0]["value"] == score.value
    assert (tmp_path / ".cache" / "itra_bench" / "features").is_dir()
