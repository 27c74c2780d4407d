"""The settings of the TAP-C transfer classifier (torch-free, so that task files naming them
are read without loading torch; :mod:`itra_bench.protocols.entailment` re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TransferConfig:
    """The MLP classifier and its training: one hidden ReLU layer, AdamW, cross-entropy,
    ``epochs`` passes in a seeded order; the epoch kept is the one with the best accuracy on
    the development pairs (the earliest on ties)."""

    hidden_dim: int = 512
    epochs: int = 5
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 512
