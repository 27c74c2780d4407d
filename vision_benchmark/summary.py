"""The ELEVATER summary: per model, mode and shot count, each dataset's metric in percent
(mean and spread over seeds) and the average over datasets. A view of the results store."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from itra_bench.atomic_io import atomic_write_text
from itra_bench.results import iter_records


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


def to_rich(block: SummaryBlock) -> Table:
    """One block as a terminal table."""
    table = Table(title=f"ELEVATER {block.title}")
    for c in ("dataset", "metric", "score %", "seeds"):
        table.add_column(c, justify="right" if c != "dataset" else "left")
    for name, (metric, per_seed) in block.rows.items():
        table.add_row(name, metric, _fmt(list(per_seed.values())), str(len(per_seed)))
    averages = block.seed_averages()
    if averages:
        table.add_row("[bold]average[/]", f"{len(block.rows)} datasets",
                      f"[bold]{_fmt(list(averages.values()))}[/]", str(len(averages)))
    return table


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


def write_summary(root: str | Path, out_dir: str | Path | None = None) -> list[SummaryBlock]:
    """Write ``elevater_summary.md`` and ``elevater_summary.csv`` when ``root`` holds
    ELEVATER results; returns the blocks (empty when there are none)."""
    blocks = summarize(root)
    if blocks:
        out = Path(out_dir or root)
        atomic_write_text(out / "elevater_summary.md", to_markdown(blocks))
        atomic_write_text(out / "elevater_summary.csv", to_csv(blocks))
    return blocks


def describe(blocks: list[SummaryBlock]) -> list[Any]:
    """Renderables for the terminal."""
    return [to_rich(b) for b in blocks]
