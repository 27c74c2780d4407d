"""Image-text alignment objectives."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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


def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (Euclidean) for each row of ``x``."""
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; the first term does not change the argmin.
    return ((centroids * centroids).sum(1) - 2 * x @ centroids.T).argmin(1)


def _cluster_means(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the rows of ``x`` in each of ``k`` clusters (zeros for an empty cluster).

    Sums are taken by a float64 running sum over the rows sorted by cluster rather than by
    scatter-adds, whose atomic additions on a GPU may run in a different order each time: the
    aim is that every process computes the same buffers from the same global batch.
    """
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=k)
    running = torch.cat([x.new_zeros(1, x.shape[1], dtype=torch.float64),
                         x[order].double().cumsum(0)])
    ends = counts.cumsum(0)
    sums = running[ends] - running[ends - counts]
    return (sums / counts.clamp(min=1).unsqueeze(1)).to(x.dtype)


def kmeans(x: torch.Tensor, k: int, iterations: int, seed: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``x`` [N, D] (on its device); returns centroids [k, D], labels [N].

    The rows are first put in a canonical order (sorted by their projection on a direction drawn
    from ``seed``), then ``k`` of them, drawn with ``seed``, start the centroids; a centroid whose
    cluster empties keeps its last position. The result therefore depends on the set of rows and
    the seed, not on the order in which the rows were given (exact ties aside).
    """
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(x.shape[1], generator=generator, dtype=torch.float64)
    canonical = x[torch.argsort(x.double() @ direction.to(x.device), stable=True)]
    start = torch.randperm(len(x), generator=generator)[:k].to(x.device)
    centroids = canonical[start].clone()
    for _ in range(iterations):
        labels = _nearest(canonical, centroids)
        occupied = torch.bincount(labels, minlength=k).unsqueeze(1) > 0
        centroids = torch.where(occupied, _cluster_means(canonical, labels, k), centroids)
    return centroids, _nearest(x, centroids)


def _projection_head(dim: int, hidden: int, out: int | None) -> nn.Module:
    """ProtoCLIP's projection head: Linear - BatchNorm - ReLU - Linear (identity if no ``out``)."""
    if out is None:
        return nn.Identity()
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, out))


class ProtoCLIP(nn.Module):
    """ProtoCLIP (Chen et al., 2022, "Prototypical Contrastive Language Image Pretraining",
    arXiv:2206.10996, IEEE TNNLS 2023): CLIP's InfoNCE plus prototype-level discrimination
    between the two sides, with prototypes from episodic k-means and Prototypical Back
    Translation (PBT). Bidirectional.

    **Features.** Each side has its own projection head (Linear-BN-ReLU-Linear to
    ``projection_dim``, as the paper's ``--add-projection-head``) owned by this loss:
    u_i = normalize(g_s(s_i)), v_i = normalize(g_t(t_i)). With ``projection_dim=None`` the heads
    are the identity: u_i = normalize(s_i), v_i = normalize(t_i).

    **Episodes.** In training mode, after the loss is computed, the detached u and v of the
    batch are appended to an episode memory of ``episode_size`` rows (buffers). When it fills,
    k-means (``kmeans_iters`` Lloyd iterations, seed ``seed + episode``, on the loss's device)
    runs on each side separately, giving student-side centroids C^s [K, P] with memory labels
    a_n, and teacher-side centroids C^t with labels b_n; the memory then starts the next episode
    (rows of a batch that did not fit go there). PBT "translates" each side's clusters into the
    other space: Cs~_k = mean{u_n : b_n = k}, Ct~_k = mean{v_n : a_n = k} (zero for an empty
    cluster). **Before the first episode completes, only the InfoNCE term is active** (the
    prototype term is an exact zero that still touches the heads, so they get zero gradients).

    **Loss.** A batch row is labelled by its nearest centroid: a_i = argmin_k ||u_i - C^s_k||,
    b_i = argmin_k ||v_i - C^t_k|| (from detached features). With the learnable prototype
    scale sigma = exp(w) (w starts at log(1/0.07), sigma clamped to <= 100):

    - student to teacher prototypes: p_i = softmax_k(sigma u_i . Cs~_k), target
      q_i = softmax_k(C^t_{b_i} . C^t_k / tau) (one-hot b_i if ``target_temperature <= 0``);
      L_s2t = -1/B sum_i sum_k q_ik log p_ik;
    - teacher to student prototypes, the same with the sides swapped: softmax(sigma v_i .
      Ct~_k) against softmax(C^s_{a_i} . C^s_k / tau);
    - loss = {"infonce": w_clip * InfoNCE(s, t, logit_scale),
      "prototype": w_proto * (L_s2t + L_t2s) / 2}.

    Without PBT (``back_translation=False``) the logits use the other side's centroids directly
    (sigma u_i . C^t_k and sigma v_i . C^s_k), the paper's plain prototype-level discrimination.
    Defaults follow the paper's released training commands (tau = 0.01, PBT on, w_clip =
    w_proto = 1, P = 128, hidden 2048) except ``episode_size`` and ``num_prototypes`` (the
    paper: 200,000 and 20,000), which are small here; raise them for real training.

    Choices where this self-contained loss differs from the paper's pipeline: the paper extracts
    the episode's features in a separate pass and labels each sample by its own k-means
    assignment; here the memory holds the previous episode's training-time features and a batch
    row's label is its nearest centroid. The paper's external-teacher (RoBERTa) term is not
    included. Order: the k-means result depends on the set of rows in an episode, not their
    order, but which rows of a batch spill into the next episode depends on their order; choose
    ``episode_size`` a multiple of the global batch size to make the loss independent of batch
    order beyond pairing.
    """

    def __init__(self, student_dim: int, teacher_dim: int, *, episode_size: int = 64,
                 num_prototypes: int = 8, kmeans_iters: int = 10, seed: int = 0,
                 projection_dim: int | None = 128, projection_hidden_dim: int = 2048,
                 target_temperature: float = 0.01, back_translation: bool = True,
                 clip_weight: float = 1.0, prototype_weight: float = 1.0, **_: object) -> None:
        super().__init__()
        if student_dim != teacher_dim:
            raise ValueError(f"protoclip needs features of the same width on both sides for its "
                             f"InfoNCE term, got student {student_dim} and teacher {teacher_dim}; "
                             "give both towers the same output dimension")
        if not 1 <= num_prototypes <= episode_size:
            raise ValueError(f"protoclip: num_prototypes ({num_prototypes}) must be between 1 "
                             f"and episode_size ({episode_size})")
        self.episode_size, self.num_prototypes = episode_size, num_prototypes
        self.kmeans_iters, self.seed = kmeans_iters, seed
        self.target_temperature, self.back_translation = target_temperature, back_translation
        self.clip_weight, self.prototype_weight = clip_weight, prototype_weight
        self.infonce = InfoNCE()
        self.student_head = _projection_head(student_dim, projection_hidden_dim, projection_dim)
        self.teacher_head = _projection_head(teacher_dim, projection_hidden_dim, projection_dim)
        self.log_prototype_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        width = projection_dim if projection_dim is not None else student_dim
        for name, rows in (("memory_student", episode_size), ("memory_teacher", episode_size),
                           ("centroids_student", num_prototypes),
                           ("centroids_teacher", num_prototypes),
                           ("translated_student", num_prototypes),
                           ("translated_teacher", num_prototypes)):
            self.register_buffer(name, torch.zeros(rows, width))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("episodes", torch.zeros((), dtype=torch.long))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                logit_scale: torch.Tensor | float = 1.0, **_: object) -> dict[str, torch.Tensor]:
        clip = self.infonce(student, teacher, logit_scale)
        u = F.normalize(self.student_head(student), dim=-1)
        v = F.normalize(self.teacher_head(teacher), dim=-1)
        scale = self.log_prototype_scale.exp().clamp(max=100)
        if int(self.episodes) == 0:
            proto = 0.0 * (u.sum() + v.sum() + scale)
        else:
            c_s, c_t = self.centroids_student, self.centroids_teacher
            a = _nearest(u.detach().to(c_s.dtype), c_s)
            b = _nearest(v.detach().to(c_t.dtype), c_t)
            pbt = self.back_translation
            s2t = self._discrimination(u, self.translated_student if pbt else c_t, c_t, b, scale)
            t2s = self._discrimination(v, self.translated_teacher if pbt else c_s, c_s, a, scale)
            proto = (s2t + t2s) / 2
        if self.training:
            self._remember(u.detach(), v.detach())
        return {"infonce": self.clip_weight * clip, "prototype": self.prototype_weight * proto}

    def _discrimination(self, features: torch.Tensor, centroids: torch.Tensor,
                        target_centroids: torch.Tensor, labels: torch.Tensor,
                        scale: torch.Tensor) -> torch.Tensor:
        """Cross-entropy between prototype logits and (soft) cluster targets."""
        logits = scale * features @ centroids.to(features.dtype).T
        if self.target_temperature > 0:
            target = torch.softmax(
                target_centroids[labels] @ target_centroids.T / self.target_temperature, dim=1)
        else:
            target = F.one_hot(labels, self.num_prototypes).to(logits.dtype)
        return -(target * logits.log_softmax(dim=1)).sum(1).mean()

    @torch.no_grad()
    def _remember(self, u: torch.Tensor, v: torch.Tensor) -> None:
        start = 0
        while start < len(u):
            filled = int(self.filled)
            take = min(self.episode_size - filled, len(u) - start)
            self.memory_student[filled:filled + take] = u[start:start + take]
            self.memory_teacher[filled:filled + take] = v[start:start + take]
            start += take
            self.filled.fill_(filled + take)
            if filled + take == self.episode_size:
                self._cluster()
                self.filled.zero_()

    @torch.no_grad()
    def _cluster(self) -> None:
        seed = self.seed + int(self.episodes)
        k, iters = self.num_prototypes, self.kmeans_iters
        c_s, a = kmeans(self.memory_student, k, iters, seed)
        c_t, b = kmeans(self.memory_teacher, k, iters, seed)
        # New tensors rather than copy_(): the old ones are still saved in this step's autograd
        # graph (the prototype logits), which an in-place write would invalidate.
        dtype = self.centroids_student.dtype
        self.centroids_student = c_s.to(dtype).clone()
        self.centroids_teacher = c_t.to(dtype).clone()
        self.translated_student = _cluster_means(self.memory_student, b, k).to(dtype)
        self.translated_teacher = _cluster_means(self.memory_teacher, a, k).to(dtype)
        self.episodes += 1
