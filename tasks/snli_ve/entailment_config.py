"""The settings of the TAP-C transfer classifier (torch-free, so that task files naming them
are read without loading torch; :mod:`itra_bench.tasks.snli_ve.entailment` re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass

from itra_bench.task_fields import file_key


@dataclass
class TransferConfig:
    """The MLP classifier and its training: one hidden ReLU layer, AdamW, cross-entropy,
    ``epochs`` passes in a seeded order; the epoch kept is the one with the best accuracy on
    the development pairs (the earliest on ties). Its fields are keys of task files that
    train one."""

    hidden_dim: int = file_key(512, help="the classifier's hidden units")
    epochs: int = file_key(5, help="training passes (the one best on dev is kept)")
    lr: float = file_key(1e-3, help="AdamW's learning rate")
    weight_decay: float = file_key(1e-4, help="AdamW's weight decay")
    batch_size: int = file_key(512, help="pairs per training step")
