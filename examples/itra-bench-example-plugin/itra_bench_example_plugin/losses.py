"""``example-cosine``: a minimal training objective, to show the loss contract."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PairedCosineLoss(nn.Module):
    """Mean cosine distance between each image and its own caption.

    loss = (1 / B) * sum_i (1 - cos(I_i, T_i)), with cos(a, b) = a . b / (|a| |b|).

    Only matched pairs enter (no negatives), so unlike InfoNCE it can collapse every feature
    to one direction; it is an example of the contract, not a recommended objective.
    ``logit_scale`` is part of the contract and ignored here.
    """

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor | None = None) -> torch.Tensor:
        return (1 - F.cosine_similarity(image_features, text_features, dim=-1)).mean()
