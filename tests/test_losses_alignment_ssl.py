"""Built-in alignment and self-supervised losses: values against their formulas written out
independently (plain loops), gradients, state (DINO's centre, ProtoCLIP's episodes), registry."""

from __future__ import annotations

import math

import pytest
import torch

from itra_bench.losses import BIDIRECTIONAL, STUDENT_TO_TEACHER
from itra_bench.plugins.losses.alignment import InfoNCE, ProtoCLIP, kmeans
from itra_bench.plugins.losses.self_supervised import DINO, BarlowTwins, VICReg
from itra_bench.registry import load_registry

NAMES = ("infonce", "protoclip", "vicreg", "barlowtwins", "dino")


def features(rows: int, dim: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=generator, dtype=torch.float64) * scale


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.clone().requires_grad_(True) for t in tensors]


def total(value: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(value.values()) if isinstance(value, dict) else value


def logsumexp(values: list[torch.Tensor]) -> torch.Tensor:
    top = max(float(v) for v in values)
    return top + torch.log(sum(torch.exp(v - top) for v in values))


def softmax(values: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = logsumexp(values)
    return [torch.exp(v - norm) for v in values]


def unit(row: torch.Tensor) -> torch.Tensor:
    return row / math.sqrt(sum(float(x) ** 2 for x in row))


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return sum(a[j] * b[j] for j in range(len(a)))


# -- registry ----------------------------------------------------------------------------------


def test_registry_lists_the_losses_with_their_contract():
    losses = load_registry().losses
    for name in NAMES:
        assert name in losses
        spec = losses[name].item
        assert spec.description and spec.paper
    assert losses["dino"].item.needs == ("prototypes",)
    assert losses["dino"].item.direction == STUDENT_TO_TEACHER
    for name in ("infonce", "protoclip", "vicreg", "barlowtwins"):
        assert losses[name].item.direction == BIDIRECTIONAL
    assert "logit_scale" in losses["protoclip"].item.needs


# -- InfoNCE -----------------------------------------------------------------------------------


def reference_infonce(s: torch.Tensor, t: torch.Tensor, scale: float) -> torch.Tensor:
    s = [unit(r) for r in s]
    t = [unit(r) for r in t]
    b = len(s)
    loss = 0.0
    for i in range(b):
        row = [scale * dot(s[i], t[j]) for j in range(b)]
        col = [scale * dot(t[i], s[j]) for j in range(b)]
        loss = loss - (row[i] - logsumexp(row)) - (col[i] - logsumexp(col))
    return loss / (2 * b)


def test_infonce_value_and_gradients():
    s, t = leaves(features(6, 4, 0), features(6, 4, 1))
    value = InfoNCE()(s, t, 10.0)
    assert torch.allclose(value, reference_infonce(s.detach(), t.detach(), 10.0), rtol=1e-10)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is not None and t.grad.abs().sum() > 0


def test_infonce_equals_open_clip_clip_loss():
    from open_clip.loss import ClipLoss

    s, t = features(8, 5, 2).float(), features(8, 5, 3).float()
    scale = torch.tensor(1 / 0.07)
    ours = InfoNCE()(s, t, scale)
    theirs = ClipLoss()(torch.nn.functional.normalize(s, dim=-1),
                        torch.nn.functional.normalize(t, dim=-1), scale)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)


# -- ProtoCLIP ---------------------------------------------------------------------------------


def planted(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Student rows in two tight groups (axes 0 / 1), teacher rows in two tight groups
    (axes 2 / 3); the teacher grouping disagrees with the student's on some rows."""
    noise = features(rows, 4, seed, scale=0.05)
    s_group = [i % 2 for i in range(rows)]
    t_group = [(i // 2) % 2 for i in range(rows)]
    s = noise.clone()
    t = features(rows, 4, seed + 100, scale=0.05)
    for i in range(rows):
        s[i, s_group[i]] += 3.0
        t[i, 2 + t_group[i]] += 3.0
    return s, t


def nearest(row: torch.Tensor, centroids: torch.Tensor) -> int:
    distances = [sum(float(row[j] - c[j]) ** 2 for j in range(len(row))) for c in centroids]
    return distances.index(min(distances))


def reference_prototype_term(loss: ProtoCLIP, s: torch.Tensor, t: torch.Tensor,
                             back_translation: bool, tau: float) -> torch.Tensor:
    """(L_s2t + L_t2s) / 2 from the loss's centroid buffers, written out."""
    sigma = 1 / 0.07
    c_s = loss.centroids_student.double()
    c_t = loss.centroids_teacher.double()
    tr_s = loss.translated_student.double()
    tr_t = loss.translated_teacher.double()
    u = [unit(r) for r in s]
    v = [unit(r) for r in t]
    k = len(c_s)

    def side(x, logit_centroids, target_centroids, others):
        value = 0.0
        for i in range(len(x)):
            label = nearest(others[i], target_centroids)
            logits = [sigma * dot(x[i], logit_centroids[j]) for j in range(k)]
            if tau > 0:
                target = softmax([dot(target_centroids[label], target_centroids[j]) / tau
                                  for j in range(k)])
            else:
                target = [1.0 if j == label else 0.0 for j in range(k)]
            norm = logsumexp(logits)
            value = value - sum(target[j] * (logits[j] - norm) for j in range(k))
        return value / len(x)

    s2t = side(u, tr_s if back_translation else c_t, c_t, v)
    t2s = side(v, tr_t if back_translation else c_s, c_s, u)
    return (s2t + t2s) / 2


def small_protoclip(**options) -> ProtoCLIP:
    settings = dict(episode_size=8, num_prototypes=2, kmeans_iters=20, projection_dim=None)
    settings.update(options)
    return ProtoCLIP(student_dim=4, teacher_dim=4, **settings).double()


def test_protoclip_only_infonce_before_the_first_episode():
    loss = small_protoclip()
    s, t = leaves(*planted(4, 0))
    out = loss(s, t, 10.0)
    assert set(out) == {"infonce", "prototype"}
    assert out["prototype"].item() == 0.0
    assert torch.allclose(out["infonce"], reference_infonce(s.detach(), t.detach(), 10.0),
                          rtol=1e-10)
    assert int(loss.filled) == 4 and int(loss.episodes) == 0
    total(out).backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


@pytest.mark.parametrize("back_translation", [True, False])
@pytest.mark.parametrize("tau", [0.01, 0.5, 0.0])
def test_protoclip_episode_kmeans_then_prototype_term(back_translation, tau):
    loss = small_protoclip(back_translation=back_translation, target_temperature=tau)
    s, t = planted(8, 1)
    first = loss(s[:4], t[:4], 10.0)
    second = loss(s[4:], t[4:], 10.0)  # fills the episode: k-means runs after this loss
    assert first["prototype"].item() == 0.0 and second["prototype"].item() == 0.0
    assert int(loss.episodes) == 1 and int(loss.filled) == 0

    # The memory holds the normalised features; k-means finds the planted groups.
    u = torch.stack([unit(r) for r in s])
    v = torch.stack([unit(r) for r in t])
    assert torch.allclose(loss.memory_student, u) and torch.allclose(loss.memory_teacher, v)
    s_group = torch.tensor([i % 2 for i in range(8)])
    t_group = torch.tensor([(i // 2) % 2 for i in range(8)])
    for memory, group, centroids in ((u, s_group, loss.centroids_student),
                                     (v, t_group, loss.centroids_teacher)):
        means = [memory[group == g].mean(0) for g in (0, 1)]
        found = sorted(centroids.tolist())
        assert torch.allclose(torch.tensor(found), torch.tensor(sorted(m.tolist() for m in means)),
                              atol=1e-12)
    # Back translation: student-space mean of each teacher cluster, and the other way round.
    for memory, others, other_centroids, translated in (
            (u, v, loss.centroids_teacher, loss.translated_student),
            (v, u, loss.centroids_student, loss.translated_teacher)):
        labels = [nearest(r, other_centroids) for r in others]
        for k in range(2):
            rows = [memory[i] for i in range(8) if labels[i] == k]
            assert torch.allclose(translated[k], sum(rows) / len(rows), atol=1e-12)

    s3, t3 = leaves(features(6, 4, 7), features(6, 4, 8))
    out = loss(s3, t3, 10.0)
    expected = reference_prototype_term(loss, s3.detach(), t3.detach(), back_translation, tau)
    assert out["prototype"].item() > 0
    assert torch.allclose(out["prototype"], expected, rtol=1e-9)
    assert torch.allclose(out["infonce"], reference_infonce(s3.detach(), t3.detach(), 10.0),
                          rtol=1e-10)
    out["prototype"].backward()
    assert s3.grad.abs().sum() > 0 and t3.grad.abs().sum() > 0
    assert loss.log_prototype_scale.grad is not None


def test_protoclip_rows_that_do_not_fit_start_the_next_episode():
    loss = small_protoclip(episode_size=6)
    s, t = planted(8, 2)
    loss(s[:4], t[:4], 1.0)
    loss(s[4:], t[4:], 1.0)
    assert int(loss.episodes) == 1 and int(loss.filled) == 2
    assert torch.allclose(loss.memory_student[:2], torch.stack([unit(r) for r in s[6:]]))


def test_protoclip_eval_mode_keeps_the_memory():
    loss = small_protoclip().eval()
    s, t = planted(8, 3)
    loss(s, t, 1.0)
    assert int(loss.filled) == 0 and int(loss.episodes) == 0


def test_protoclip_projection_heads_train_and_state_round_trips():
    torch.manual_seed(0)
    loss = small_protoclip(projection_dim=3, projection_hidden_dim=8)
    s, t = leaves(*planted(8, 4))
    total(loss(s, t, 10.0)).backward()  # fills the episode; heads take part with zero gradients
    heads = [*loss.student_head.parameters(), *loss.teacher_head.parameters()]
    assert all(p.grad is not None for p in heads)
    assert int(loss.episodes) == 1 and loss.memory_student.shape == (8, 3)
    loss.zero_grad()
    s2, t2 = leaves(features(6, 4, 9), features(6, 4, 10))
    out = loss(s2, t2, 10.0)
    out["prototype"].backward()
    assert all(p.grad.abs().sum() > 0 for p in heads)
    assert s2.grad.abs().sum() > 0

    restored = small_protoclip(projection_dim=3, projection_hidden_dim=8)
    restored.load_state_dict(loss.state_dict())
    loss.eval(), restored.eval()
    a, b = loss(s2, t2, 10.0), restored(s2, t2, 10.0)
    assert torch.equal(a["prototype"], b["prototype"])


def test_kmeans_ignores_row_order():
    x = features(40, 5, 11).float()
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    c1, labels1 = kmeans(x, 4, 5, seed=7)
    c2, labels2 = kmeans(x[perm], 4, 5, seed=7)
    assert torch.equal(c1, c2)
    assert torch.equal(labels1[perm], labels2)


def test_protoclip_refuses_bad_settings():
    with pytest.raises(ValueError, match="same width"):
        ProtoCLIP(student_dim=4, teacher_dim=5)
    with pytest.raises(ValueError, match="num_prototypes"):
        ProtoCLIP(student_dim=4, teacher_dim=4, episode_size=4, num_prototypes=5)


# -- VICReg ------------------------------------------------------------------------------------


def column_stats(z: torch.Tensor) -> tuple[list[float], list[torch.Tensor]]:
    n, d = z.shape
    means = [sum(z[i, j] for i in range(n)) / n for j in range(d)]
    return means, [sum((z[i, j] - means[j]) ** 2 for i in range(n)) for j in range(d)]


def reference_vicreg(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    n, d = a.shape
    invariance = sum((a[i, j] - b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def variance(z):
        _, squares = column_stats(z)
        return sum(max(0.0, 1 - math.sqrt(float(sq) / (n - 1) + 1e-4)) for sq in squares) / d

    def covariance(z):
        means, _ = column_stats(z)
        value = 0.0
        for p in range(d):
            for q in range(d):
                if p != q:
                    cov = sum((z[i, p] - means[p]) * (z[i, q] - means[q]) for i in range(n))
                    value += float(cov / (n - 1)) ** 2
        return value / d

    return {"invariance": 25 * invariance,
            "variance": 25 * (variance(a) + variance(b)) / 2,
            "covariance": 1 * (covariance(a) + covariance(b))}


def test_vicreg_value_and_gradients():
    # Columns of different spread, so the variance hinge is active on some and not others.
    spread = torch.tensor([0.3, 0.6, 2.0, 3.0, 0.1], dtype=torch.float64)
    s, t = leaves(features(8, 5, 20) * spread, features(8, 5, 21) * spread.flip(0))
    out = VICReg(student_dim=5, teacher_dim=5)(s, t)
    expected = reference_vicreg(s.detach(), t.detach())
    assert set(out) == set(expected)
    for name, value in expected.items():
        assert math.isclose(out[name].item(), float(value), rel_tol=1e-10), name
    total(out).backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_vicreg_refuses_views_of_different_width():
    with pytest.raises(ValueError, match="student 4 and teacher 6"):
        VICReg(student_dim=4, teacher_dim=6)
    spec = load_registry().losses["vicreg"].item
    with pytest.raises(ValueError, match="same width"):
        spec.factory(student_dim=4, teacher_dim=6, prototypes=0)


# -- Barlow Twins ------------------------------------------------------------------------------


def reference_barlow(a: torch.Tensor, b: torch.Tensor, lambd: float) -> dict[str, float]:
    n, d = a.shape

    def standardise(z):
        means, squares = column_stats(z)
        return [[float(z[i, j] - means[j]) / math.sqrt(float(squares[j]) / n + 1e-5)
                 for j in range(d)] for i in range(n)]

    za, zb = standardise(a), standardise(b)
    on, off = 0.0, 0.0
    for p in range(d):
        for q in range(d):
            c = sum(za[i][p] * zb[i][q] for i in range(n)) / n
            if p == q:
                on += (1 - c) ** 2
            else:
                off += c ** 2
    return {"on_diagonal": on, "off_diagonal": lambd * off}


def test_barlowtwins_value_and_gradients():
    base = features(7, 4, 30)
    s, t = leaves(base, base * 2 + features(7, 4, 31, scale=0.5))
    out = BarlowTwins(student_dim=4, teacher_dim=4)(s, t)
    expected = reference_barlow(s.detach(), t.detach(), 0.0051)
    assert set(out) == set(expected)
    for name, value in expected.items():
        assert math.isclose(out[name].item(), value, rel_tol=1e-9), name
    total(out).backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same width"):
        BarlowTwins(student_dim=4, teacher_dim=3)


# -- DINO --------------------------------------------------------------------------------------


def reference_dino(s: torch.Tensor, t: torch.Tensor, center: list[float]) -> torch.Tensor:
    b, k = s.shape
    value = 0.0
    for i in range(b):
        target = softmax([(t[i, j] - center[j]) / 0.04 for j in range(k)])
        logits = [s[i, j] / 0.1 for j in range(k)]
        norm = logsumexp(logits)
        value = value - sum(target[j] * (logits[j] - norm) for j in range(k))
    return value / b


def test_dino_value_centre_and_direction():
    k = 5
    loss = DINO(prototypes=k).double()
    s1, t1 = leaves(features(6, k, 40), features(6, k, 41))
    feats = features(6, 3, 42)
    value = loss(feats, feats, None, student_prototypes=s1, teacher_prototypes=t1)
    assert torch.allclose(value, reference_dino(s1.detach(), t1.detach(), [0.0] * k), rtol=1e-10)
    value.backward()
    assert s1.grad.abs().sum() > 0
    assert t1.grad is None  # uni-directional: nothing reaches the teacher

    # After one training step the centre is 0.9 * 0 + 0.1 * the teacher's batch mean.
    mean1 = [sum(float(t1.detach()[i, j]) for i in range(6)) / 6 for j in range(k)]
    center1 = [0.1 * m for m in mean1]
    assert torch.allclose(loss.center, torch.tensor([center1], dtype=torch.float64), rtol=1e-12)

    # The next step is computed with that centre, then moves it again.
    s2, t2 = leaves(features(6, k, 43), features(6, k, 44))
    value = loss(feats, feats, None, student_prototypes=s2, teacher_prototypes=t2)
    assert torch.allclose(value, reference_dino(s2.detach(), t2.detach(), center1), rtol=1e-10)
    mean2 = [sum(float(t2.detach()[i, j]) for i in range(6)) / 6 for j in range(k)]
    center2 = [0.9 * c + 0.1 * m for c, m in zip(center1, mean2, strict=True)]
    assert torch.allclose(loss.center, torch.tensor([center2], dtype=torch.float64), rtol=1e-12)

    # Evaluation mode leaves the centre alone.
    loss.eval()
    loss(feats, feats, None, student_prototypes=s2, teacher_prototypes=t2)
    assert torch.allclose(loss.center, torch.tensor([center2], dtype=torch.float64), rtol=1e-12)


def test_dino_needs_a_prototype_layer():
    message = "dino needs a prototype layer: --image-head dino --prototypes N"
    spec = load_registry().losses["dino"].item
    with pytest.raises(ValueError, match=message):
        spec.factory(student_dim=4, teacher_dim=4, prototypes=0)
    assert isinstance(spec.factory(student_dim=4, teacher_dim=4, prototypes=3), DINO)
    loss = DINO(prototypes=3)
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="student_prototypes"):
        loss(x, x, None)
    with pytest.raises(ValueError, match=r"expected \(4, 3\)"):
        loss(x, x, None, student_prototypes=torch.zeros(4, 2), teacher_prototypes=x)
