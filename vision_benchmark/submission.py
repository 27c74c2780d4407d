"""ELEVATER prediction files and the EvalAI submission zip built from them.

A prediction file holds one dataset, one mode and one or more sampling seeds, with the fields
ELEVATER's own scripts write (model_name, dataset_name, num_trainable_params, num_params,
num_visual_params, num_backbone_params, n_shot, rnd_seeds, predictions[seed][image][class]),
floats rounded to 6 decimals. The submission combines the files of each dataset the way
ELEVATER's ``prepare_submit`` does: ``num_trainable_params`` is averaged, ``rnd_seeds`` and
``predictions`` are concatenated, and every other field must agree.
(Field names and combination rule: Elevater_Toolkit_IC vision_benchmark/commands/
prepare_submit.py and the predictions written by its commands.)
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from itra_bench.atomic_io import atomic_write, atomic_write_text
from itra_bench.errors import UserError
from itra_bench.tables import Column, Value, render
from itra_bench.vision_benchmark import cards as _cards
from itra_bench.vision_benchmark.cards import DatasetCard

if TYPE_CHECKING:
    from itra_bench.registry import Registry

FIELDS = ("model_name", "dataset_name", "num_trainable_params", "num_params",
          "num_visual_params", "num_backbone_params", "n_shot", "rnd_seeds", "predictions")
AVERAGED = ("num_trainable_params",)
CONCATENATED = ("rnd_seeds", "predictions")
SUFFIX = ".predictions.json"
PRECISION = 6


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, PRECISION)
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    return obj


def file_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``[N, C]`` probabilities exactly as a prediction file stores them (6 decimals), so as
    EvalAI reads them back: rounding can tie scores that differed, which changes metrics
    whose value depends on ties (11-point mAP, and argmax-based ones on exact ties)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be [images, classes], got {probs.shape}")
    # Python's round, as json output of _rounded() gives; np.round may differ in the last bit.
    return np.asarray(_rounded(probs.tolist()), dtype=np.float64).reshape(probs.shape)


def prediction_record(*, model_name: str, dataset_name: str, probabilities: np.ndarray,
                      seed: int, n_shot: int, num_trainable_params: int, num_params: int,
                      num_visual_params: int, num_backbone_params: int) -> dict[str, Any]:
    """One ELEVATER prediction document for a single seed; ``probabilities`` is [N, C]."""
    probs = file_probabilities(probabilities)
    return {
        "model_name": model_name, "dataset_name": dataset_name,
        "num_trainable_params": int(num_trainable_params), "num_params": int(num_params),
        "num_visual_params": int(num_visual_params),
        "num_backbone_params": int(num_backbone_params), "n_shot": int(n_shot),
        "rnd_seeds": [int(seed)], "predictions": [probs.tolist()],
    }


def write_prediction_file(path: str | Path, record: dict[str, Any]) -> Path:
    """Atomically write a prediction document (floats rounded to 6 decimals)."""
    return atomic_write_text(path, json.dumps(_rounded(record)))


def combine(records: Iterable[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per dataset, combined as ELEVATER's prepare_submit does; files of one
    dataset whose other fields disagree are refused, naming both files and the field."""
    by_dataset: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, record in records:
        missing = [f for f in FIELDS if f not in record]
        if missing:
            raise UserError(f"{path} is not an ELEVATER prediction file: it lacks {missing}")
        by_dataset.setdefault(record["dataset_name"], []).append((path, record))
    combined = []
    for dataset in sorted(by_dataset):
        group = by_dataset[dataset]
        first_path, first = group[0]
        entry: dict[str, Any] = {}
        for field in FIELDS:
            values = [r[field] for _, r in group]
            if field in CONCATENATED:
                entry[field] = [v for vs in values for v in vs]
            elif field in AVERAGED:
                entry[field] = float(np.mean(values))
            else:
                for path, record in group[1:]:
                    if record[field] != first[field]:
                        raise UserError(
                            f"{path} and {first_path} (dataset {dataset!r}) disagree on "
                            f"{field!r}: {record[field]!r} vs {first[field]!r}. Submit "
                            "predictions of one model and one shot count per dataset.")
                entry[field] = first[field]
        combined.append(entry)
    return combined


def check_sizes(records: Iterable[tuple[Path, dict[str, Any]]],
                cards: Mapping[str, DatasetCard]) -> None:
    """Refuse a prediction file whose rows (images) or columns (classes) differ from its
    dataset's test split as the card states it: a run that skipped images (``--skip-corrupt``)
    or read a cut index leaves a file EvalAI would score as complete, or reject."""
    for path, record in records:
        name = record.get("dataset_name")
        card = cards.get(name) if isinstance(name, str) else None
        if card is None:
            raise UserError(
                f"{path}: dataset {name!r} has no known dataset card, so its predictions "
                "cannot be checked for completeness; EvalAI's ELEVATER benchmark scores only "
                "its own datasets. Leave this file out (move it, or pick files with --variant)")
        rows, classes = card.splits["test"].num_images, card.num_classes
        predictions = record.get("predictions")
        if not isinstance(predictions, list) or not predictions:
            raise UserError(f"{path}: 'predictions' must be a list of [images][classes] "
                            "tables, one per seed")
        for seed, table in zip(record.get("rnd_seeds") or [None] * len(predictions),
                               predictions, strict=False):
            found = len(table) if isinstance(table, list) else None
            if found != rows:
                raise UserError(
                    f"{path}: dataset {name!r} (seed {seed}) has {found} prediction rows, but "
                    f"its test split has {rows} images (num_images in its card "
                    f"{card.path or 'built-in'}). The run skipped images or read an "
                    "incomplete index: fix or re-download the data and run again "
                    "(with --overwrite) before submitting.")
            bad = next((i for i, row in enumerate(table)
                        if not isinstance(row, list) or len(row) != classes), None)
            if bad is not None:
                got = len(table[bad]) if isinstance(table[bad], list) else "no"
                raise UserError(
                    f"{path}: dataset {name!r} (seed {seed}), row {bad} holds {got} scores, "
                    f"but the dataset has {classes} classes; the file is not from this "
                    "dataset's card or was edited: run the dataset again")


def find_prediction_files(folder: str | Path) -> list[Path]:
    """Every prediction file under ``folder`` (as written by ``itra-bench run``)."""
    return sorted(Path(folder).rglob(f"*{SUFFIX}"))


def write_submission(folder: str | Path, out: str | Path,
                     files: list[Path] | None = None,
                     cards: Iterable[DatasetCard] | None = None
                     ) -> tuple[Path, list[dict[str, Any]]]:
    """Build ``out`` (a zip holding ``all_predictions.json`` = ``{"data": [...]}``) from the
    prediction files under ``folder``; returns the path and the combined entries.

    Every file must hold one row per test image and one score per class of its dataset, as
    the dataset's card states (``cards``: the built-in cards by default)."""
    files = files if files is not None else find_prediction_files(folder)
    if not files:
        raise UserError(f"no prediction files (*{SUFFIX}) under {folder}; run ELEVATER tasks "
                        "with `itra-bench run ... --tasks elevater` first")
    records = []
    for path in files:
        try:
            record = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise UserError(f"cannot read prediction file {path}: {exc}") from exc
        if not isinstance(record, dict):
            raise UserError(f"{path} is not an ELEVATER prediction file: not a JSON object")
        records.append((path, record))
    combined = combine(records)  # first: a file that is no prediction file says so
    by_name = {c.name: c for c in (_cards.builtin_cards() if cards is None else cards)}
    check_sizes(records, by_name)
    entries = combined
    payload = json.dumps(_rounded({"data": entries}))

    def write(f: Any) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("all_predictions.json", payload)

    return atomic_write(out, write), entries


def submit_command(args: argparse.Namespace, registry: Registry, console: Console) -> int:
    """``itra-bench submit FOLDER -o ZIP [--variant PREFIX]``: combine the prediction files
    under ``FOLDER`` into an EvalAI zip and print what it holds."""
    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}")
    files = find_prediction_files(folder)
    if args.variant:
        files = [f for f in files if f.name.startswith(args.variant)]
    # Every ELEVATER-format dataset the plugins know (the built-in 20 and plugin cards), so
    # each prediction file is checked against its own card's counts.
    cards = [card for p in registry.tasks.values()
             if isinstance(card := getattr(p.item, "card", None), DatasetCard)]
    path, entries = write_submission(folder, args.output, files, cards=cards)
    columns = [Column("dataset", whole=True), Column("model", whole=True),
               Column("n_shot", whole=True, align="right"), Column("seeds"),
               Column("predictions", whole=True)]
    rows: list[dict[str, Value]] = [
        {"dataset": e["dataset_name"], "model": e["model_name"], "n_shot": e["n_shot"],
         "seeds": ",".join(map(str, e["rnd_seeds"])),
         "predictions": f"{len(e['predictions'])} x {len(e['predictions'][0])} x "
                        f"{len(e['predictions'][0][0])}"} for e in entries]
    render(rows, columns, "table", Console(), title=f"EvalAI submission {path}")
    console.print(f"wrote {path} ({len(entries)} datasets)")
    return 0
