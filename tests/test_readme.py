"""The README and the documentation pages (docs/, built by MkDocs) state what users and
plugin authors rely on: their links and paths exist, the hook table lists every hook, the
Python API page runs as printed, and the API reference documents the public API."""

from __future__ import annotations

import re

import doc_pages
from doc_pages import README, ROOT

import itra_bench
import itra_bench.hookspecs as hookspecs

TOP = ("itra_bench/", "itra_train/", "plugins/", "tasks/", "vision_benchmark/", "examples/",
       "benchmarks/", "tests/", ".ci/", "docs/")


def _links(text: str) -> list[str]:
    """The targets of a page's Markdown links, outside code."""
    return re.findall(r"\]\(([^)\s]+)\)", doc_pages.without_code(text))


def _repo_paths(text: str) -> set[str]:
    """Paths from the repository root named in code spans (``itra_bench/...``)."""
    code = re.findall(r"`([^`\s]+)`", text)
    found = {p for p in code if p.startswith(TOP)}
    # Placeholders (<name>, *.yaml, {a,b}) are patterns, not paths.
    return {p.rstrip(".,:;") for p in found if not re.search(r"[<>*{}\[\]]", p)}


def test_paths_in_readme_and_docs_exist():
    paths = set().union(*(_repo_paths(text) for text in doc_pages.pages().values()))
    assert len(paths) > 5  # the pattern finds the pages' paths at all
    missing = sorted(p for p in paths if not (ROOT / p.split("::")[0]).exists())
    assert missing == []


def test_links_of_readme_and_docs_lead_somewhere():
    """Every relative link leads to a file that exists, and its #anchor to a heading of that
    page; a page of the site links only within docs/ (MkDocs cannot show other files)."""
    broken, checked = [], 0
    for name, text in doc_pages.pages().items():
        folder = (ROOT / name).parent
        for link in _links(text):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            checked += 1
            target, _, anchor = link.partition("#")
            path = (folder / target).resolve() if target else ROOT / name
            if not path.exists():
                broken.append(f"{name}: {link} (no such file)")
                continue
            relative = path.relative_to(ROOT).as_posix()
            if name != README and not relative.startswith("docs/"):
                broken.append(f"{name}: {link} (outside docs/; name it in code instead)")
            elif anchor and relative.endswith(".md") and \
                    anchor not in doc_pages.anchors(relative):
                broken.append(f"{name}: {link} (no heading #{anchor} in {relative})")
    assert checked > 50  # the pattern finds the links at all
    assert broken == []


def test_every_docs_page_is_in_the_navigation():
    assert sorted(doc_pages.nav()) == doc_pages.doc_files()


def test_hook_table_lists_every_hook():
    hooks = sorted(n for n in dir(hookspecs) if n.startswith("itra_bench_"))
    section = doc_pages.page("plugins.md")
    table = section[:section.index("\n\n", section.index("| hook |"))]
    assert [h for h in hooks if f"`{h}(" not in table] == []


def test_demo_figures_are_found_and_name_one_demo():
    """The demo's figures (held to a real run of the demo by test_train.py's slow demo test)
    are where the parser looks, the quick start (README and docs), the demo section and the
    `compare` table's epoch 10 quote one run, and every demo cache path names the current
    DEMO_VERSION."""
    from readme_figures import parse

    from itra_train.demo import DEMO_VERSION

    pages = doc_pages.pages()
    figures = parse(pages)
    assert figures.demo["digits-zeroshot"] == figures.quick_start["digits-zeroshot"][0]
    for task, score in figures.demo.items():
        # One decimal in the text, two in the table: the same score.
        assert abs(float(figures.compare[task]["b"]) - float(score)) <= 0.05 + 1e-9, task
    versions = {v for text in pages.values() for v in re.findall(r"demo-v\d+", text)}
    assert versions == {f"demo-{DEMO_VERSION}"}


def _python_blocks(name: str) -> list[str]:
    """The ```python blocks of a page, in order."""
    return [b.body for b in doc_pages.blocks(name) if b.lang == "python"]


def test_python_api_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """The code of the Python API page, exactly as printed, runs and gives what it says."""
    blocks = _python_blocks("python-api.md")
    assert len(blocks) == 2 and "evaluate(" in blocks[0] and "nn.Module" in blocks[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # the default feature cache, ~/.cache/...
    namespace: dict = {"__name__": "readme"}
    exec(compile("\n".join(blocks), "docs/python-api.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert 0 < float(out.splitlines()[0]) <= 1  # print(results.score("digits-knn"))
    assert "digits-zeroshot" in out and "digits-knn" in out  # results.print()
    score = namespace["score"]
    assert (score.task, score.main_score, score.status) == ("digits-knn", "acc1", "done")
    assert score.path.is_file() and score.path.parts[0] == "my-results"
    assert namespace["rows"][0]["value"] == score.value
    assert (tmp_path / ".cache" / "itra_bench" / "features").is_dir()


def test_readme_python_is_the_python_api_pages():
    """The README's Python example is the Python API page's first block (run above)."""
    readme = _python_blocks(README)
    assert readme and all(block in _python_blocks("python-api.md") for block in readme)


def test_api_reference_documents_exactly_the_public_api():
    """docs/reference/api.md renders (mkdocstrings) each name of itra_bench.__all__, once."""
    names = re.findall(r"^::: itra_bench\.(\w+)\s*$", doc_pages.page("reference/api.md"), re.M)
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(itra_bench.__all__)
