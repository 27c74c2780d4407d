"""Image-text alignment objectives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from itra_bench.losses import LossSpec


class InfoNCE(nn.Module):
    """CLIP's symmetric contrastive loss (Radford et al., 2021, "Learning Transferable Visual
    Models From Natural Language Supervision").

    With L2-normalised features s_i (student) and t_j (teacher), logits = scale * s t^T and the
    matching pair on the diagonal:
    loss = (CE(logits, diag) + CE(logits^T, diag)) / 2. Bidirectional.
    """

    def __init__(self, **_: object) -> None:
        super().__init__()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor | float = 1.0, **_: object) -> torch.Tensor:
        student = F.normalize(student, dim=-1)
        teacher = F.normalize(teacher, dim=-1)
        logits = logit_scale * student @ teacher.T
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


SPECS = [LossSpec("infonce", InfoNCE, description="CLIP symmetric contrastive loss",
                  paper="Radford et al. 2021", needs=("logit_scale",))]
