"""Numeric flag types shared by ``itra-bench`` and ``itra-train``.

Each is an argparse ``type`` that states its allowed range, so a value outside it is refused
by the parser (exit 2, the flag and the range named) before anything runs; ``problem`` checks
a value read from elsewhere (an ``itra-train --config`` YAML file) by the same rule.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Number:
    """A number of type ``kind`` (int or float) from ``low`` to ``high`` (None: unbounded);
    ``low_open``/``high_open`` exclude the bound itself. Floats must be finite."""

    kind: type = int
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """The rule in words, e.g. ``an integer of at least 1``."""
        what = "an integer" if self.kind is int else "a finite number"
        low, high = (None if b is None else str(int(b)) if self.kind is int else f"{b:g}"
                     for b in (self.low, self.high))
        if low is not None and high is not None:
            if not (self.low_open or self.high_open):
                return f"{what} from {low} to {high}"
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {left}{low}, {high}{right}"
        if low is not None:
            return f"{what} {'above' if self.low_open else 'of at least'} {low}"
        if high is not None:
            return f"{what} {'below' if self.high_open else 'of at most'} {high}"
        return what

    def problem(self, value: object) -> str | None:
        """Why ``value`` breaks the rule, as ``must be ..., got ...``; None when it keeps it."""
        wrong = f"must be {self.describe()}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return wrong
        if self.kind is int and not isinstance(value, int):
            return wrong
        if not math.isfinite(value):
            return wrong
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return wrong
        if self.high is not None and (value > self.high
                                      or (self.high_open and value == self.high)):
            return wrong
        return None

    def __call__(self, text: str) -> int | float:
        """``text`` read as this number (argparse's ``type``)."""
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or self.problem(value) is not None:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return value


#: Integers of 1 or more (counts, sizes).
positive_int = Number(int, low=1)
#: Integers of 0 or more (worker counts, epochs to skip).
non_negative_int = Number(int, low=0)
#: Numbers above 0 (learning rates, temperatures, timeouts).
positive_float = Number(float, low=0, low_open=True)
#: Numbers of 0 or more (weight decay, warm-up fractions).
non_negative_float = Number(float, low=0)
#: Seeds: every generator that is seeded (Python's, NumPy's, torch's) takes these.
seed_int = Number(int, low=0, high=2**32 - 1)
#: AdamW's betas.
unit_float = Number(float, low=0, high=1, high_open=True)
