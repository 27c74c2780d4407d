"""The ELEVATER summary: per model, mode and shot count, each dataset's metric in percent
(mean and spread over seeds) and the average over datasets. A view of the results store,
which this plugin adds to ``itra-bench results`` (``elevater_summary.md`` and ``.csv``) and to
the HTML report through the ``itra_bench_result_summaries`` hook (:func:`result_summary`)."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from itra_bench import summaries
from itra_bench.results import iter_records
from itra_bench.tables import Column, render

#: What the report says above the summary's tables.
NOTE = ("Per model, mode and shot count: each dataset's ELEVATER metric in percent (mean ± "
        "standard deviation over few-shot seeds), and the average over the datasets (as "
        "`itra-bench results` prints it).")


@dataclass
class SummaryBlock:
    """One (model, mode, shots) table: dataset -> (metric, per-seed values)."""

    model: str
    mode: str
    shots: int
    rows: dict[str, tuple[str, dict[int, float]]]

    @property
    def title(self) -> str:
        shots = "" if self.mode.startswith("zeroshot") else (
            ", full" if self.shots == -1 else f", {self.shots}-shot")
        return f"{self.model}: {self.mode}{shots}"

    def seed_averages(self) -> dict[int, float]:
        """Average over datasets for each seed that every dataset has."""
        seeds = set.intersection(*(set(v) for _, v in self.rows.values())) if self.rows else set()
        return {s: statistics.fmean(v[s] for _, v in self.rows.values()) for s in sorted(seeds)}


def _fmt(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def summarize(root: str | Path) -> list[SummaryBlock]:
    """Collect every ELEVATER result under ``root`` into summary blocks."""
    blocks: dict[tuple[str, str, int], dict[str, tuple[str, dict[int, float]]]] = \
        defaultdict(dict)
    for _, r in iter_records(root):
        if r.get("protocol") != "elevater":
            continue
        d = r.get("details", {})
        mode = d.get("mode", "zeroshot")
        if d.get("knowledge", "none") != "none":
            mode = f"{mode}+{d['knowledge']}"
        key = (r["model"]["name"], mode, int(d.get("n_shot", 0)))
        metric, per_seed = blocks[key].setdefault(r["task"], (r["main_score"], {}))
        per_seed[int(d.get("seed", 0))] = float(r["main_score_value"])
    return [SummaryBlock(m, mode, shots, dict(sorted(rows.items())))
            for (m, mode, shots), rows in sorted(blocks.items())]


#: The terminal table's columns: names and numbers are never cut (see itra_bench.tables).
COLUMNS = [Column("dataset", whole=True), Column("metric", whole=True),
           Column("score %", align="right", whole=True),
           Column("seeds", align="right", whole=True)]


def summary_table(block: SummaryBlock) -> summaries.SummaryTable:
    """One block as a table of :data:`COLUMNS`: each dataset, then the average (the total
    row, its score emphasised) when every dataset has a seed in common."""
    rows = [{"dataset": name, "metric": metric, "score %": _fmt(list(per_seed.values())),
             "seeds": str(len(per_seed))} for name, (metric, per_seed) in block.rows.items()]
    averages = block.seed_averages()
    total = {"dataset": "average", "metric": f"{len(block.rows)} datasets",
             "score %": _fmt(list(averages.values())), "seeds": str(len(averages))} \
        if averages else None
    return summaries.SummaryTable(f"ELEVATER {block.title}", COLUMNS, rows, total,
                                  emphasis=("dataset", "score %"))


def print_summary(blocks: list[SummaryBlock], console: Console) -> None:
    """Print each block as a terminal table that never cuts a name (stacked ``header:
    value`` lines when it cannot fit the console)."""
    for block in blocks:
        table = summary_table(block)
        render(table.all_rows(), table.columns, "table", console, title=table.title)


class SummaryTable:
    """One block as a rich renderable, laid out by :func:`print_summary` at the width it is
    given."""

    def __init__(self, block: SummaryBlock) -> None:
        self.block = block

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        buffer = io.StringIO()
        inner = Console(file=buffer, width=options.max_width, color_system=console.color_system,
                        force_terminal=console.is_terminal, no_color=console.no_color,
                        legacy_windows=False)
        print_summary([self.block], inner)
        for line in buffer.getvalue().splitlines():
            yield Text.from_ansi(line, no_wrap=True, overflow="ignore")


def to_rich(block: SummaryBlock) -> SummaryTable:
    """One block as a terminal table (a renderable: ``console.print(to_rich(block))``)."""
    return SummaryTable(block)


def to_markdown(blocks: list[SummaryBlock]) -> str:
    """All blocks as Markdown tables (scores in percent, mean ± std over seeds)."""
    out = []
    for block in blocks:
        out += [f"### ELEVATER {block.title}", "", "| dataset | metric | score % | seeds |",
                "|---|---|---:|---:|"]
        for name, (metric, per_seed) in block.rows.items():
            out.append(f"| {name} | {metric} | {_fmt(list(per_seed.values()))} | "
                       f"{len(per_seed)} |")
        averages = block.seed_averages()
        if averages:
            out.append(f"| **average** | {len(block.rows)} datasets | "
                       f"**{_fmt(list(averages.values()))}** | {len(averages)} |")
        out.append("")
    return "\n".join(out)


def to_csv(blocks: list[SummaryBlock]) -> str:
    """Long format: model, mode, shots, dataset, metric, seed, value (fraction)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "mode", "shots", "dataset", "metric", "seed", "value"])
    for b in blocks:
        for name, (metric, per_seed) in b.rows.items():
            for seed, value in sorted(per_seed.items()):
                w.writerow([b.model, b.mode, b.shots, name, metric, seed, repr(value)])
    return buf.getvalue()


def result_summary(root: Path) -> summaries.Summary | None:
    """The ELEVATER summary of the results under ``root``: a table per model, mode and shot
    count, and the files ``elevater_summary.md`` and ``elevater_summary.csv``; None when
    ``root`` holds no ELEVATER result."""
    blocks = summarize(root)
    if not blocks:
        return None
    return summaries.Summary([summary_table(b) for b in blocks],
                             {"elevater_summary.md": to_markdown(blocks),
                              "elevater_summary.csv": to_csv(blocks)}, NOTE)


def describe(blocks: list[SummaryBlock]) -> list[Any]:
    """Renderables for the terminal."""
    return [to_rich(b) for b in blocks]
