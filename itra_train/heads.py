"""Projection heads between a tower and the joint space, and the prototype layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from itra_bench import UserError

#: ``--image-head`` / ``--text-head`` values.
HEAD_KINDS = ("auto", "none", "linear", "mlp", "dino")


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers`` linear layers (``in -> hidden -> ... -> out``) with GELU between them."""
    if layers < 1:
        raise UserError(f"--head-layers must be at least 1, got {layers}")
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        modules.append(nn.Linear(a, b))
        if i < layers - 1:
            modules.append(nn.GELU())
    return nn.Sequential(*modules)


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al., 2021): an MLP to a bottleneck, L2-normalised.

    The prototype layer that DINO puts after it is :class:`PrototypeLayer`, held once by the
    model so that the image and text heads share their prototypes.
    """

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, layers: int = 3) -> None:
        super().__init__()
        self.mlp = mlp(in_dim, hidden, bottleneck, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)


class PrototypeLayer(nn.Module):
    """A weight-normalised linear layer without bias whose ``K`` rows are prototypes; the
    row norms are fixed at 1 (DINO's ``norm_last_layer``), so outputs are cosine scores of
    the L2-normalised input against each prototype."""

    def __init__(self, dim: int, prototypes: int) -> None:
        super().__init__()
        self.layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(dim, prototypes, bias=False))
        self.layer.parametrizations.weight.original0.data.fill_(1.0)
        self.layer.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(F.normalize(x, dim=-1))


def build_head(kind: str, in_dim: int, out_dim: int, hidden: int, layers: int) -> nn.Module:
    """One head of ``kind`` (``none``, ``linear``, ``mlp`` or ``dino``)."""
    if kind == "none":
        if in_dim != out_dim:
            raise UserError(f"a head of 'none' keeps width {in_dim}, but the joint space is "
                            f"{out_dim} wide; use --image-head/--text-head linear (or mlp, dino)")
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return mlp(in_dim, hidden, out_dim, layers)
    if kind == "dino":
        return DINOHead(in_dim, hidden, out_dim, layers)
    raise UserError(f"unknown head {kind!r}; choose one of {', '.join(HEAD_KINDS[1:])}")
