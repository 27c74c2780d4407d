"""The demo's figures that the README and the docs quote, parsed from their text: the quick
start's zero-shot score and interval (README.md and docs/getting-started.md), the demo
section's scores and the machine they were made on (docs/getting-started.md), and the table of
the `compare` example (docs/results/compare.md). Tests hold them to what the demo gives
(``check``)."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

import doc_pages
from doc_pages import ROOT

#: Where each quoted section is.
QUICK_START = ("README.md", "docs/getting-started.md")
DEMO = "docs/getting-started.md"
COMPARE = "docs/results/compare.md"
#: Off the docs' reference machine (another CPU or torch version), how far a figure may
#: be from the docs': they say "up to about a point" (an AVX2-only run moved by 0.74).
TOLERANCE = 1.5
#: The docs' names of instruction sets, as torch.backends.cpu.get_cpu_capability() says.
CAPABILITIES = {"AVX-512": "AVX512", "AVX2": "AVX2"}


@dataclass(frozen=True)
class Reference:
    """Where the figures come from, as the demo section says: ``torch 2.14.1 on an AMD EPYC CPU
    with AVX-512``."""

    torch: str
    cpu: str
    isa: str

    def matches(self, torch_version: str, cpu_name: str, capability: str) -> bool:
        return (torch_version.split("+")[0] == self.torch and self.cpu in cpu_name
                and CAPABILITIES.get(self.isa) == capability)

    def is_this_machine(self) -> bool:
        """Whether this machine has the docs' torch version, CPU and instruction set."""
        import torch

        spec = importlib.util.spec_from_file_location(
            "machine_info", ROOT / "benchmarks" / "machine_info.py")
        machine_info = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(machine_info)
        return self.matches(torch.__version__, machine_info.cpu_name(),
                            torch.backends.cpu.get_cpu_capability())


@dataclass(frozen=True)
class Figures:
    reference: Reference
    #: task -> (score, low, high) as printed: the quick start's zero-shot with its interval.
    quick_start: dict[str, tuple[str, str, str]]
    #: task -> score as printed (the demo section).
    demo: dict[str, str]
    #: the compare table: task -> {"a", "b", "difference", "low", "high", "p_value",
    #: "significant"} as printed ("" where empty).
    compare: dict[str, dict[str, str]]


def _search(pattern: str, text: str, where: str) -> re.Match:
    # The pages are wrapped anywhere: a space in the pattern matches any whitespace.
    match = re.search(pattern.replace(" ", r"\s+"), text)
    assert match, f"{where}: no text matching {pattern!r} (reworded? update " \
                  f"tests/helpers/readme_figures.py)"
    return match


def _quick_start(text: str, where: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    quick = doc_pages.section(text, "Quick start")
    m = _search(r"zero-shot top-1 on the held-out digits is \*\*(?P<s>[\d.]+) %\*\* "
                r"\(chance: 10 %\), with a 95 % bootstrap interval of (?P<lo>[\d.]+)-"
                r"(?P<hi>[\d.]+) %", quick, where)
    torch = _search(r"torch (?P<v>\d+\.\d+\.\d+)", quick, where)["v"]
    return {"digits-zeroshot": (m["s"], m["lo"], m["hi"])}, torch


def parse(pages: dict[str, str] | None = None) -> Figures:
    """The figures of ``pages`` (page name -> text; default: the files themselves)."""
    pages = doc_pages.pages() if pages is None else pages
    quick = [_quick_start(pages[name], f"{name}, Quick start") for name in QUICK_START]
    assert all(q == quick[0] for q in quick), \
        f"the quick starts of {' and '.join(QUICK_START)} quote different figures: {quick}"
    quick_start, quick_torch = quick[0]

    demo_text = doc_pages.section(pages[DEMO], "The demo")
    m = _search(r"zero-shot top-1 \*\*(?P<zs>[\d.]+) %\*\*, linear probe (?P<lp>[\d.]+) %, "
                r"10-NN (?P<knn>[\d.]+) %, clustering NMI (?P<nmi>[\d.]+) %\. Retrieval's "
                r"mean recall is low \((?P<ret>[\d.]+) %\)", demo_text, f"{DEMO}, The demo")
    demo = {"digits-zeroshot": m["zs"], "digits-linear-probe": m["lp"], "digits-knn": m["knn"],
            "digits-clustering": m["nmi"], "digits-retrieval": m["ret"]}
    m = _search(r"those of torch (?P<v>\d+\.\d+\.\d+) on an? (?P<cpu>[\w\s]+?) CPU with "
                r"(?P<isa>AVX-512|AVX2)", demo_text, f"{DEMO}, The demo")
    reference = Reference(m["v"], " ".join(m["cpu"].split()), m["isa"])
    assert quick_torch == reference.torch, "the quick start and the demo section name " \
        f"different torch versions ({quick_torch}, {reference.torch})"

    table = doc_pages.section(pages[COMPARE], "Is B better than A?")
    keys = ("a", "b", "difference", "ci", "p_value", "significant")
    compare = {}
    for line in table.splitlines():
        if not line.startswith("│ "):
            continue
        task, _, *cells = [c.strip() for c in line.strip("│").split("│")]
        assert len(cells) == len(keys), f"{COMPARE}: columns of {line}"
        row = dict(zip(keys, cells, strict=True))
        low, high = row.pop("ci").strip("[]").split(",")
        compare[task] = {**row, "low": low.strip(), "high": high.strip()}
    assert len(compare) == 6, f"{COMPARE}: {len(compare)} table rows"
    return Figures(reference, quick_start, demo, compare)


def _agree(printed: str, value: float, exact: bool) -> bool:
    """``value`` (x 100) printed to ``printed``'s decimals gives ``printed`` (``exact``), or
    lies within TOLERANCE of it."""
    if exact:
        decimals = len(printed.split(".")[1]) if "." in printed else 0
        return float(f"{value:.{decimals}f}") == float(printed)
    return abs(value - float(printed)) <= TOLERANCE


def check(figures: Figures, records: dict[str, dict], compare_rows: dict[str, dict],
          exact: bool) -> list[str]:
    """Every figure of the README and the docs that the demo's results disagree with, one line
    each.

    ``records``: result records of ``itra-bench run --model demo --tasks demo`` by task;
    ``compare_rows``: rows of ``itra-bench compare --format json`` by task."""
    wrong = []

    def expect(where: str, printed: str, value: float | None) -> None:
        if value is None or not _agree(printed, value, exact):
            shown = "none" if value is None else f"{value:.4f}"
            wrong.append(f"{where}: the docs {printed}, the demo {shown}")

    for task, (score, low, high) in figures.quick_start.items():
        rec, ci = records[task], records[task]["main_score_interval"]
        expect(f"quick start {task}", score, 100 * rec["main_score_value"])
        expect(f"quick start {task} interval low", low, 100 * ci["low"])
        expect(f"quick start {task} interval high", high, 100 * ci["high"])
    for task, score in figures.demo.items():
        expect(f"the demo {task}", score, 100 * records[task]["main_score_value"])
    for task, row in figures.compare.items():
        got = compare_rows.get(task)
        if got is None:
            wrong.append(f"compare {task}: not in the demo's comparison")
            continue
        for key in ("a", "b", "difference", "low", "high"):
            expect(f"compare {task} {key}", row[key], got[key])
        if exact and row["p_value"]:
            expect(f"compare {task} p", row["p_value"], got["p_value"])
        if (row["significant"] == "*") != bool(got.get("significant")):
            wrong.append(f"compare {task}: the docs' Holm {row['significant']!r}, the demo "
                         f"significant={got.get('significant')}")
    return wrong
