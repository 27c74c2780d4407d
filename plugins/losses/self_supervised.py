"""Self-supervised objectives applied across the image and text views.

Each loss treats the student features and the teacher features (or, without a teacher model, the
image and the text features) of the same row as two views of one sample. All statistics are
taken over the global batch, and every term is a sum or mean over rows, so these losses do not
depend on the order of the rows beyond the pairing of student row i with teacher row i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _same_width(name: str, student_dim: int | None, teacher_dim: int | None) -> None:
    if student_dim is not None and teacher_dim is not None and student_dim != teacher_dim:
        raise ValueError(f"{name} compares the two views feature by feature, so both need the same "
                         f"width; got student {student_dim} and teacher {teacher_dim}. Give both "
                         "towers (or the student and the teacher) the same output dimension")


def _check_views(name: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{name}: student {tuple(student.shape)} and teacher "
                         f"{tuple(teacher.shape)} features must have the same shape")
    if len(student) < 2:
        raise ValueError(f"{name} takes statistics over the batch and needs at least 2 rows, got "
                         f"{len(student)}")


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    mask = ~torch.eye(len(matrix), dtype=torch.bool, device=matrix.device)
    return matrix[mask]


class VICReg(nn.Module):
    """VICReg (Bardes, Ponce and LeCun, 2022, "VICReg: Variance-Invariance-Covariance
    Regularization for Self-Supervised Learning", ICLR). Bidirectional.

    For the two views Z (student) and Z' (teacher), each [n, d], unnormalised:

    - invariance = lambda * mean_{i,j} (z_ij - z'_ij)^2 (``F.mse_loss``);
    - variance = mu * (v(Z) + v(Z')) / 2 with v(Z) = 1/d sum_j max(0, gamma - sqrt(Var(z^j) +
      eps)), unbiased variance over the batch, gamma = 1, eps = 1e-4;
    - covariance = nu * (c(Z) + c(Z')) with c(Z) = 1/d sum_{i != j} C(Z)_ij^2 and
      C(Z) = 1/(n-1) sum_i (z_i - mean z)(z_i - mean z)^T.

    Weights lambda = mu = 25, nu = 1 (the paper's defaults). Where the paper's text and the
    reference code differ we follow the reference code (facebookresearch/vicreg), whose weights
    were tuned with it: the invariance MSE is averaged over the n*d entries and the variance term
    averages the two views (/2) while the covariance term sums them. Returns the three weighted
    terms; the trainer sums them.
    """

    def __init__(self, student_dim: int | None = None, teacher_dim: int | None = None, *,
                 invariance_weight: float = 25.0, variance_weight: float = 25.0,
                 covariance_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4,
                 **_: object) -> None:
        super().__init__()
        _same_width("vicreg", student_dim, teacher_dim)
        self.invariance_weight, self.variance_weight = invariance_weight, variance_weight
        self.covariance_weight, self.gamma, self.eps = covariance_weight, gamma, eps

    def _variance(self, z: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(z.var(dim=0) + self.eps)
        return F.relu(self.gamma - std).mean()

    @staticmethod
    def _covariance(z: torch.Tensor) -> torch.Tensor:
        n, d = z.shape
        centred = z - z.mean(dim=0)
        cov = centred.T @ centred / (n - 1)
        return _off_diagonal(cov).pow(2).sum() / d

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: object = None, **_: object) -> dict[str, torch.Tensor]:
        _check_views("vicreg", student, teacher)
        invariance = F.mse_loss(student, teacher)
        variance = (self._variance(student) + self._variance(teacher)) / 2
        covariance = self._covariance(student) + self._covariance(teacher)
        return {"invariance": self.invariance_weight * invariance,
                "variance": self.variance_weight * variance,
                "covariance": self.covariance_weight * covariance}


class BarlowTwins(nn.Module):
    """Barlow Twins (Zbontar et al., 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", ICML). Bidirectional.

    Each view is standardised per feature over the batch, z^ = (z - mean z) / sqrt(Var z + eps)
    (biased variance, eps = 1e-5: the reference code's ``BatchNorm1d(affine=False)`` in training
    mode; the batch statistics are used in eval mode too). With the cross-correlation
    C = z^_s^T z^_t / n [d, d]:

    loss = sum_i (1 - C_ii)^2  +  lambda * sum_{i != j} C_ij^2,  lambda = 0.0051

    (0.0051 is the reference code's default; the paper states 5e-3). Returned as the terms
    ``on_diagonal`` and ``off_diagonal`` (already weighted by lambda); the trainer sums them.
    """

    def __init__(self, student_dim: int | None = None, teacher_dim: int | None = None, *,
                 lambd: float = 0.0051, eps: float = 1e-5, **_: object) -> None:
        super().__init__()
        _same_width("barlowtwins", student_dim, teacher_dim)
        self.lambd, self.eps = lambd, eps

    def _standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + self.eps)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: object = None, **_: object) -> dict[str, torch.Tensor]:
        _check_views("barlowtwins", student, teacher)
        c = self._standardise(student).T @ self._standardise(teacher) / len(student)
        on_diagonal = (1 - torch.diagonal(c)).pow(2).sum()
        off_diagonal = _off_diagonal(c).pow(2).sum()
        return {"on_diagonal": on_diagonal, "off_diagonal": self.lambd * off_diagonal}


class DINO(nn.Module):
    """DINO (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision Transformers",
    ICCV): self-distillation on prototype scores. Uni-directional (student to teacher).

    With the prototype-layer logits s_i (student) and t_i (teacher), both [K]:

    loss = -1/B sum_i sum_k P_t(t_i)_k log P_s(s_i)_k,
    P_t(t_i) = softmax((t_i - center) / tau_t) (detached: no gradient reaches the teacher),
    P_s(s_i) = softmax(s_i / tau_s),  tau_t = 0.04 (sharpening), tau_s = 0.1.

    ``center`` [1, K] is a buffer (zeros at start). After the loss is computed, and only in
    training mode: center <- m * center + (1 - m) * mean_i t_i, m = 0.9. One view per side (no
    multi-crop) and a fixed tau_t (the paper warms it up from 0.04 to 0.07).
    """

    def __init__(self, prototypes: int = 0, *, student_temperature: float = 0.1,
                 teacher_temperature: float = 0.04, center_momentum: float = 0.9,
                 **_: object) -> None:
        super().__init__()
        if prototypes <= 0:
            raise ValueError("dino needs a prototype layer: --image-head dino --prototypes N")
        self.prototypes = prototypes
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, prototypes))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, logit_scale: object = None,
                *, student_prototypes: torch.Tensor | None = None,
                teacher_prototypes: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        if student_prototypes is None or teacher_prototypes is None:
            raise ValueError("dino needs the prototype layer's outputs (student_prototypes and "
                             "teacher_prototypes): --image-head dino --prototypes N")
        expected = (len(student_prototypes), self.prototypes)
        for side, scores in (("student", student_prototypes), ("teacher", teacher_prototypes)):
            if tuple(scores.shape) != expected:
                raise ValueError(f"dino: {side}_prototypes has shape {tuple(scores.shape)}, "
                                 f"expected {expected} (built with prototypes={self.prototypes})")
        teacher_scores = teacher_prototypes.detach()
        targets = torch.softmax((teacher_scores - self.center) / self.teacher_temperature, dim=-1)
        log_probs = F.log_softmax(student_prototypes / self.student_temperature, dim=-1)
        loss = -(targets * log_probs).sum(dim=-1).mean()
        if self.training:
            self._update_center(teacher_scores)
        return loss

    @torch.no_grad()
    def _update_center(self, teacher_scores: torch.Tensor) -> None:
        batch_center = teacher_scores.float().mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_center.to(self.center.dtype),
                                                     alpha=1 - self.center_momentum)
