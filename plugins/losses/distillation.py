"""Knowledge distillation from a frozen teacher.

One small class per objective. Each is called as ``loss(student, teacher, logit_scale, *,
student_prototypes=None, teacher_prototypes=None)`` on the global batch (see
:class:`itra_bench.losses.LossSpec`). Similarities and distributions are computed in float32 with
autocast off: the sharp temperatures used here (down to 1e-4) do not survive half precision.

Queues (SEED, CompRess) are buffers: a ``[K, D]`` matrix of past features plus a write pointer,
both saved with the checkpoint. They start as unit-norm random vectors drawn from a fixed seed
(identical on every process, as in SEED's and MoCo's random initial queue), and are written FIFO
with the current batch *after* the loss is computed, in training mode only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RKD", "SEED", "CompRess1q", "CompRess2q", "FeatureQueue", "ProtoCPC", "SimReg"]


def _float32(reference: torch.Tensor) -> torch.autocast:
    """A context that turns autocast off on ``reference``'s device."""
    return torch.autocast(device_type=reference.device.type, enabled=False)


def _same_width(loss: str, student_dim: int, teacher_dim: int) -> None:
    if student_dim != teacher_dim:
        raise ValueError(
            f"--loss {loss} compares student features with teacher features in one space, so "
            f"their widths must match, but the student gives {student_dim} and the teacher "
            f"{teacher_dim}; give the student a projection head with the teacher's width "
            f"(--embed-dim {teacher_dim}), or choose a loss that allows different widths "
            "(rkd, compress-2q, simreg)")


def _check_batch(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.ndim != 2 or teacher.ndim != 2 or len(student) != len(teacher):
        raise ValueError(f"expected student [B, Ds] and teacher [B, Dt] features with the same "
                         f"B, got {tuple(student.shape)} and {tuple(teacher.shape)}")


class FeatureQueue(nn.Module):
    """A FIFO memory of ``size`` feature rows of width ``dim``.

    ``features`` holds the rows (slot ``ptr`` is the next to be overwritten, i.e. the oldest);
    :meth:`push` writes a batch as if its rows were enqueued one by one. A push replaces the
    buffer tensor rather than writing into it, so a tensor read before the push (and saved by
    autograd) is never modified.
    """

    def __init__(self, size: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"a queue needs at least one slot, got size {size}")
        generator = torch.Generator().manual_seed(seed)
        init = F.normalize(torch.randn(size, dim, generator=generator), dim=1)
        self.register_buffer("features", init)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def push(self, batch: torch.Tensor) -> None:
        """Enqueue ``batch`` ``[B, dim]`` (detached), evicting the oldest rows."""
        count = len(batch)
        if count == 0:
            return
        first = max(0, count - self.size)  # rows a larger batch would itself push out again
        rows = batch[first:].detach().to(self.features.dtype)
        slots = (self.ptr + torch.arange(first, count, device=self.ptr.device)) % self.size
        self.features = self.features.index_copy(0, slots, rows)
        self.ptr = (self.ptr + count) % self.size


class RKD(nn.Module):
    """Relational Knowledge Distillation (Park et al., 2019, "Relational Knowledge
    Distillation", CVPR).

    On L2-normalised features x (student s, teacher t; widths may differ):

    - distance-wise: psi_D(i, j) = ||x_i - x_j|| / mu with mu the mean distance over pairs
      i != j; L_D = mean over all B^2 pairs (i, j) of huber(psi_D(s), psi_D(t));
    - angle-wise: psi_A(a, b, c) = <e_ab, e_ac> with e_ab = (x_b - x_a) / ||x_b - x_a|| (0 for
      b = a), the cosine of the angle at vertex a; L_A = mean over all B^3 triplets of
      huber(psi_A(s), psi_A(t));

    with huber the smooth-L1 loss (delta 1). Returns ``{"distance": w_d L_D, "angle": w_a L_A}``
    (a term with weight 0 is left out). Bidirectional: both relation sets carry gradients (with
    a frozen teacher its features carry none anyway), as ITRA uses RKD between two trained towers.

    Defaults: w_d = 25, w_a = 50 are the paper's weights for image classification (Sec. 4.2, also
    the defaults of mdistiller's RKD); the paper's metric-learning runs use 1 and 2, ITRA 0.5 and
    1.0. ``normalize=True`` follows the official code, whose embeddings are L2-normalised by
    default (``--l2normalize true``), and ITRA; ``normalize=False`` uses the raw features. The
    averaging over all B^2 pairs and B^3 triplets (degenerate ones contribute 0) is the official
    code's. Memory grows as B^2 * D + B^3 (the angle term).
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0,
                 normalize: bool = True, **_: object) -> None:
        super().__init__()
        if not distance_weight and not angle_weight:
            raise ValueError("RKD needs a nonzero distance_weight or angle_weight")
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)
        self.normalize = normalize

    @staticmethod
    def distances(x: torch.Tensor) -> torch.Tensor:
        """Euclidean distances ``[B, B]`` with an exact zero diagonal (and a finite gradient)."""
        squared = (x * x).sum(dim=1)
        d2 = (squared[:, None] + squared[None, :] - 2 * x @ x.T).clamp_min(1e-12)
        eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
        return d2.sqrt().masked_fill(eye, 0.0)

    @classmethod
    def distance_potential(cls, x: torch.Tensor) -> torch.Tensor:
        d = cls.distances(x)
        count = len(x) * (len(x) - 1)
        return d / (d.sum() / count)

    @staticmethod
    def angle_potential(x: torch.Tensor) -> torch.Tensor:
        """``[B, B, B]``: entry (a, b, c) is the cosine of the angle b-a-c."""
        edges = F.normalize(x[None, :, :] - x[:, None, :], dim=2)  # [a, b] = unit(x_b - x_a)
        return edges @ edges.transpose(1, 2)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor | float | None = None,
                **_: object) -> dict[str, torch.Tensor]:
        _check_batch(student, teacher)
        with _float32(student):
            s, t = student.float(), teacher.float()
            if self.normalize:
                s, t = F.normalize(s, dim=1), F.normalize(t, dim=1)
            terms: dict[str, torch.Tensor] = {}
            if len(s) < 2:  # no pair to relate: a zero that still reaches both inputs
                zero = 0.0 * (s.sum() + t.sum())
                if self.distance_weight:
                    terms["distance"] = zero
                if self.angle_weight:
                    terms["angle"] = zero
                return terms
            if self.distance_weight:
                loss = F.smooth_l1_loss(self.distance_potential(s), self.distance_potential(t))
                terms["distance"] = self.distance_weight * loss
            if self.angle_weight:
                loss = F.smooth_l1_loss(self.angle_potential(s), self.angle_potential(t))
                terms["angle"] = self.angle_weight * loss
        return terms


class SEED(nn.Module):
    """SEED (Fang et al., 2021, "SEED: Self-supervised Distillation For Visual
    Representation", ICLR).

    With L2-normalised s_i (student), t_i (teacher) and a queue Q of K past teacher features,
    each sample is scored against the anchors [t_i, Q_1, ..., Q_K]:
    p^T_i = softmax([t_i.t_i, t_i Q^T] / tau_T) (no gradient), z^S_i = [s_i.t_i, s_i Q^T] / tau_S,
    loss = mean_i -sum_k p^T_ik log softmax(z^S_i)_k (soft cross-entropy).
    The teacher batch is then enqueued (training mode only). Uni-directional: the teacher is
    detached. Student and teacher must share a width.

    Defaults from the official code (jacobswan1/SEED ``tools/opts.py``): K = 65536 (``--queue``),
    tau_S = 0.2 (``--temp``), tau_T = 1e-4 (``--distill-t``). (0.07 is only the builder's
    fallback student temperature, MoCo's, which the training script overrides with 0.2.)
    """

    def __init__(self, student_dim: int, teacher_dim: int, queue_size: int = 65536,
                 student_temperature: float = 0.2, teacher_temperature: float = 1e-4,
                 **_: object) -> None:
        super().__init__()
        _same_width("seed", student_dim, teacher_dim)
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.queue = FeatureQueue(queue_size, teacher_dim, seed=0)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor | float | None = None, **_: object) -> torch.Tensor:
        _check_batch(student, teacher)
        _same_width("seed", student.shape[1], teacher.shape[1])
        with _float32(student):
            s = F.normalize(student.float(), dim=1)
            t = F.normalize(teacher.detach().float(), dim=1)
            queue = self.queue.features.float()
            student_logits = torch.cat([(s * t).sum(1, keepdim=True), s @ queue.T], dim=1)
            teacher_logits = torch.cat([(t * t).sum(1, keepdim=True), t @ queue.T], dim=1)
            target = F.softmax(teacher_logits / self.teacher_temperature, dim=1)
            log_p = F.log_softmax(student_logits / self.student_temperature, dim=1)
            loss = -(target * log_p).sum(dim=1).mean()
        if self.training:
            self.queue.push(t)
        return loss


def _kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """mean_i KL(softmax(teacher_i) || softmax(student_i))."""
    log_p_t = F.log_softmax(teacher_logits, dim=1)
    log_p_s = F.log_softmax(student_logits, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()


class CompRess1q(nn.Module):
    """CompRess with one queue (Abbasi Koohpayegani et al., 2020, "CompRess: Self-Supervised
    Learning by Compressing Representations", NeurIPS).

    With L2-normalised s_i, t_i and one memory bank Q of K past teacher features, both sides are
    scored against the same anchors:
    p^T_i = softmax(t_i Q^T / tau), p^S_i = softmax(s_i Q^T / tau),
    loss = mean_i KL(p^T_i || p^S_i); the teacher batch is then enqueued (training mode only).
    Uni-directional (as in the paper and in ITRA): the teacher is detached, since the student is
    placed among the teacher's own anchors. Student and teacher must share a width (the paper
    adds a linear layer to the student for this).

    Defaults from the official code (UMBCvision/CompRess ``train_student_one_queue.py``):
    K = 128000 (``--compress_memory_size``), tau = 0.04 (``--compress_t``); ITRA uses K = 65536.
    """

    def __init__(self, student_dim: int, teacher_dim: int, queue_size: int = 128000,
                 temperature: float = 0.04, **_: object) -> None:
        super().__init__()
        _same_width("compress-1q", student_dim, teacher_dim)
        self.temperature = temperature
        self.queue = FeatureQueue(queue_size, teacher_dim, seed=1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor | float | None = None, **_: object) -> torch.Tensor:
        _check_batch(student, teacher)
        _same_width("compress-1q", student.shape[1], teacher.shape[1])
        with _float32(student):
            s = F.normalize(student.float(), dim=1)
            t = F.normalize(teacher.detach().float(), dim=1)
            queue = self.queue.features.float()
            loss = _kl(t @ queue.T / self.temperature, s @ queue.T / self.temperature)
        if self.training:
            self.queue.push(t)
        return loss


class CompRess2q(nn.Module):
    """CompRess with two queues (Abbasi Koohpayegani et al., 2020, "CompRess: Self-Supervised
    Learning by Compressing Representations", NeurIPS), the paper's main variant.

    With L2-normalised s_i, t_i, a student memory bank Q^S of past student features and a teacher
    bank Q^T of past teacher features (K rows each; widths may differ):
    p^T_i = softmax(t_i (Q^T)^T / tau), p^S_i = softmax(s_i (Q^S)^T / tau),
    loss = mean_i KL(p^T_i || p^S_i); then each batch is enqueued into its own bank (training
    mode only).

    Direction: bidirectional, as ITRA lists it (not uni-directional). Each side is scored only
    against its own features and its own memory, so, like RKD, it matches relational structure
    between two spaces and is meaningful with both towers trained (ITRA's image-text use without
    a teacher). With a frozen ``--teacher`` its features carry no gradient, and this is the
    paper's training exactly. The banks are never differentiated.

    Defaults from the official code (UMBCvision/CompRess ``nn/compress_loss.py``): K = 128000,
    tau = 0.04; ITRA uses K = 65536.
    """

    def __init__(self, student_dim: int, teacher_dim: int, queue_size: int = 128000,
                 temperature: float = 0.04, **_: object) -> None:
        super().__init__()
        self.temperature = temperature
        self.student_queue = FeatureQueue(queue_size, student_dim, seed=2)
        self.teacher_queue = FeatureQueue(queue_size, teacher_dim, seed=3)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor | float | None = None, **_: object) -> torch.Tensor:
        _check_batch(student, teacher)
        with _float32(student):
            s = F.normalize(student.float(), dim=1)
            t = F.normalize(teacher.float(), dim=1)
            student_logits = s @ self.student_queue.features.float().T / self.temperature
            teacher_logits = t @ self.teacher_queue.features.float().T / self.temperature
            loss = _kl(teacher_logits, student_logits)
        if self.training:
            self.student_queue.push(s)
            self.teacher_queue.push(t)
        return loss


class ProtoCPC(nn.Module):
    """ProtoCPC (Lee, 2022, "Prototypical Contrastive Predictive Coding", ICLR), on the
    prototype layer's outputs.

    With student and teacher prototype logits u_i, v_i ``[K]``, q_i = softmax(v_i / tau_T)
    (no gradient) and a prior pi over the K prototypes (mean 1, starts uniform):
    loss = mean_i [ -sum_k q_ik u_ik / tau_S + log sum_k pi_k exp(u_ik / tau_S) ],
    i.e. the cross-entropy of q_i with the student's prototype density ratio exp(u/tau_S)
    normalised under the prior (a contrastive, CPC-style bound, with prototypes as the
    negatives). After the loss, in training mode, pi <- m pi + (1 - m) K mean_i q_i.
    Uni-directional: the teacher's prototypes are detached.

    Defaults as ITRA's ProtoCPC loss (adapted from the paper's code): tau_S = 0.1, tau_T = 0.04
    (no warm-up), m = 0.9 (``prior_momentum``), softmax (not Sinkhorn) teacher assignments.
    """

    def __init__(self, prototypes: int = 0, student_temperature: float = 0.1,
                 teacher_temperature: float = 0.04, prior_momentum: float = 0.9,
                 **_: object) -> None:
        super().__init__()
        if prototypes <= 0:
            raise ValueError("--loss protocpc works on prototype outputs, but this model has no "
                             "prototype layer; add one with --image-head dino --prototypes N")
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.prior_momentum = prior_momentum
        self.register_buffer("prior", torch.ones(prototypes))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor | float | None = None, *,
                student_prototypes: torch.Tensor | None = None,
                teacher_prototypes: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        if student_prototypes is None or teacher_prototypes is None:
            raise ValueError("--loss protocpc needs student_prototypes and teacher_prototypes "
                             "(a model with --image-head dino --prototypes N)")
        k = len(self.prior)
        if student_prototypes.shape[-1] != k or teacher_prototypes.shape[-1] != k:
            raise ValueError(f"--loss protocpc was built for {k} prototypes but got outputs of "
                             f"{student_prototypes.shape[-1]} (student) and "
                             f"{teacher_prototypes.shape[-1]} (teacher)")
        with _float32(student_prototypes):
            u = student_prototypes.float() / self.student_temperature
            q = F.softmax(teacher_prototypes.detach().float() / self.teacher_temperature, dim=1)
            log_norm = torch.logsumexp(u + self.prior.float().log(), dim=1)
            loss = (log_norm - (q * u).sum(dim=1)).mean()
        if self.training:
            with torch.no_grad():
                batch_prior = q.sum(dim=0)
                batch_prior = batch_prior / batch_prior.sum() * k
                m = self.prior_momentum
                self.prior = (m * self.prior + (1 - m) * batch_prior).to(self.prior.dtype)
        return loss


class SimReg(nn.Module):
    """SimReg (Navaneet et al., 2022, "SimReg: Regression as a Simple Yet Effective Tool for
    Self-supervised Knowledge Distillation", BMVC 2021).

    A prediction MLP h (owned by this loss, student width -> teacher width) maps the student
    features, which then regress the teacher's:
    loss = mean_i || h(s_i)/||h(s_i)|| - t_i/||t_i|| ||^2 = mean_i (2 - 2 cos(h(s_i), t_i)),
    the paper's MSE on L2-normalised features (summed over dimensions, as in the official
    ``simreg.py``).

    Uni-directional: the teacher is detached. Regressing one side onto the other through a
    predictor collapses without a stop-gradient on the target (the SimSiam/BYOL argument), and
    the paper regresses a frozen teacher. (ITRA's SimReg, which has no predictor, lets both sides
    train.)

    The head: ``depth`` linear layers, the hidden ones ``hidden_dim`` wide (default twice the
    student width, the paper's) and followed by BatchNorm (``batch_norm``) and ReLU. The default
    depth 2 is small; the paper's best students use a 4-layer head (``depth=4``; its code also
    drops the BN/ReLU between its 2nd and 3rd layer).
    """

    def __init__(self, student_dim: int, teacher_dim: int, depth: int = 2, hidden_dim: int = 0,
                 batch_norm: bool = True, **_: object) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"the SimReg prediction head needs at least one layer, got {depth}")
        hidden = hidden_dim or 2 * student_dim
        layers: list[nn.Module] = []
        width = student_dim
        for _layer in range(depth - 1):
            layers.append(nn.Linear(width, hidden))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU(inplace=True))
            width = hidden
        layers.append(nn.Linear(width, teacher_dim))
        self.head = nn.Sequential(*layers)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor | float | None = None, **_: object) -> torch.Tensor:
        _check_batch(student, teacher)
        prediction = self.head(student)
        with _float32(student):
            p = F.normalize(prediction.float(), dim=1)
            t = F.normalize(teacher.detach().float(), dim=1)
            return ((p - t) ** 2).sum(dim=1).mean()
