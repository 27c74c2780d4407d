"""``example-cosine``: a minimal training objective, to show the loss contract
(``itra_bench.LossSpec``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PairedCosineLoss(nn.Module):
    """Mean cosine distance between each image and its own caption.

    loss = (1 / B) * sum_i (1 - cos(I_i, T_i)), with cos(a, b) = a . b / (|a| |b|).

    Only matched pairs enter (no negatives), so unlike InfoNCE it can collapse every feature
    to one direction; it is an example of the contract, not a recommended objective.
    """

    def __init__(self, **_: object) -> None:
        # itra-train passes student_dim, teacher_dim and prototypes to every loss; this one
        # needs none of them. It names no option, so any --loss-options key is refused.
        super().__init__()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``student`` (image) and ``teacher`` (text) features ``[B, D]``, row i paired with
        row i; ``logit_scale`` is part of the contract and ignored here."""
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
