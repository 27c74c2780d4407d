"""Built-in training objectives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from itra_bench import hookimpl
from itra_bench.losses import LossSpec


class InfoNCE(nn.Module):
    """CLIP's symmetric contrastive loss (Radford et al., 2021, "Learning Transferable Visual
    Models From Natural Language Supervision").

    With L2-normalised features, logits = s * I T^T and targets on the diagonal:
    loss = (CE(logits, diag) + CE(logits^T, diag)) / 2. Bidirectional.
    """

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
        logits = logit_scale * image_features @ text_features.T
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@hookimpl
def itra_bench_losses() -> list[LossSpec]:
    return [LossSpec("infonce", InfoNCE, description="CLIP symmetric contrastive loss",
                     paper="Radford et al. 2021")]
