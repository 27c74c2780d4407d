"""The task options of a run (what ``ctx.options`` holds), checked by one rule whether they
come from ``itra-bench run``'s protocol flags or from :func:`itra_bench.evaluate`'s keywords.

Torch-free: the command line imports it at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from itra_bench.cli_types import (
    Number,
    non_negative_float,
    positive_float,
    positive_int,
    seed_int,
)
from itra_bench.errors import UserError

#: The image-classification protocols of ``--mode`` / ``mode=``.
MODES = ("zeroshot", "linear_probe", "finetune")
#: What ``--knowledge`` / ``knowledge=`` accepts.
KNOWLEDGE = ("none", "wordnet")


@dataclass(frozen=True)
class Spelling:
    """How messages name each task option: as the command line's flag or as the Python
    API's keyword, so that a refusal names what the user typed."""

    no_tuning: str
    lr: str
    l2: str
    shots: str
    seeds: str
    mode: str
    knowledge: str
    max_passages: str


FLAGS = Spelling("--no-tuning", "--lr", "--l2", "--shots", "--seeds", "--mode", "--knowledge",
                 "--max-passages")
KEYWORDS = Spelling("tuning=False", "lr", "l2", "shots", "seeds", "mode", "knowledge",
                    "max_passages")


def protocol_options(*, mode: str | None = None, shots: int | Iterable[int] | None = None,
                     seeds: int | Iterable[int] | None = None, tuning: bool | None = None,
                     lr: float | None = None, l2: float | None = None,
                     knowledge: str | None = None, max_passages: int | None = None,
                     extra: Mapping[str, Any] | None = None,
                     spelling: Spelling = KEYWORDS) -> dict[str, Any]:
    """The task options these settings give (only those given), checked: ``lr`` and ``l2``
    go with ``tuning=False`` and it needs both, shots are positive or -1, seeds are seeds.
    ``extra`` (``--task-option KEY=VALUE``) is added last and wins. A bad value is a
    :class:`UserError` naming the option as ``spelling`` spells it."""
    s = spelling
    if tuning is False and (lr is None or l2 is None):
        raise UserError(f"{s.no_tuning} needs both {s.lr} and {s.l2}")
    if tuning is not False and (lr is not None or l2 is not None):
        given = " and ".join(n for n, v in ((s.lr, lr), (s.l2, l2)) if v is not None)
        raise UserError(f"{given} set the linear head's training without the hyper-parameter "
                        f"search: give {s.no_tuning} with them, or drop them")
    shots = _int_list(shots, s.shots)
    if shots is not None and any(n == 0 or n < -1 for n in shots):
        raise UserError(f"{s.shots} takes positive counts or -1 (full set), got {shots}")
    seeds = _int_list(seeds, s.seeds)
    for seed in seeds or ():
        if (problem := seed_int.problem(seed)) is not None:
            raise UserError(f"{s.seeds}: each seed {problem}")
    for name, value, allowed in ((s.mode, mode, MODES), (s.knowledge, knowledge, KNOWLEDGE)):
        if value is not None and value not in allowed:
            raise UserError(f"{name} {value!r}: choose one of {', '.join(allowed)}")
    if tuning is not None and not isinstance(tuning, bool):
        raise UserError(f"tuning must be True or False, got {tuning!r}")
    for name, value, rule in ((s.lr, lr, positive_float), (s.l2, l2, non_negative_float),
                              (s.max_passages, max_passages, positive_int)):
        _check_number(name, value, rule)
    options: dict[str, Any] = {}
    # The order `itra-bench run` has always recorded them in.
    for key, value in (("mode", mode), ("shots", shots), ("seeds", seeds), ("tuning", tuning),
                       ("knowledge", knowledge)):
        if value is not None:
            options[key] = value
    if tuning is False:
        options.update(lr=lr, l2=l2)
    if max_passages is not None:
        options["max_passages"] = max_passages
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not key:
            raise UserError(f"task option names are non-empty strings, got {key!r}")
        options[key] = value
    return options


def _int_list(value: int | Iterable[int] | None, name: str) -> list[int] | None:
    """``value`` as a list of integers (one integer is a list of one); None stays None."""
    if value is None:
        return None
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        out = list(values)  # type: ignore[arg-type]
    except TypeError:
        out = None
    if not out or any(isinstance(v, bool) or not isinstance(v, int) for v in out):
        raise UserError(f"{name} takes an integer or a list of integers, got {value!r}")
    return out


def _check_number(name: str, value: object, rule: Number) -> None:
    """Refuse ``value`` (unless None) when it breaks ``rule``."""
    if value is not None and (problem := rule.problem(value)) is not None:
        raise UserError(f"{name} {problem}")
