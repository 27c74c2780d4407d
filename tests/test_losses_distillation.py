"""Distillation losses: values against independently written formulas (loops over samples,
pairs and triplets in float64), gradient routing, FIFO queues and prototype priors, registry."""

from __future__ import annotations

import math

import pytest
import torch

from itra_bench.losses import BIDIRECTIONAL, STUDENT_TO_TEACHER
from itra_bench.plugins.losses.distillation import (
    RKD,
    SEED,
    CompRess1q,
    CompRess2q,
    FeatureQueue,
    ProtoCPC,
    SimReg,
)
from itra_bench.registry import load_registry


def features(rows: int, width: int, seed: int, grad: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, width, generator=generator).requires_grad_(grad)


def unit(v: torch.Tensor) -> torch.Tensor:
    v = v.detach().double()
    return v / math.sqrt(float((v * v).sum()))


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def close(value: torch.Tensor, expected: float, rel: float = 1e-5) -> None:
    assert float(value.detach()) == pytest.approx(expected, rel=rel, abs=1e-6)


# --------------------------------------------------------------------------- RKD


def rkd_reference(s: torch.Tensor, t: torch.Tensor, normalize: bool = True) -> tuple[float, float]:
    def rows(x):
        return [unit(r) if normalize else r.detach().double() for r in x]

    def dist_potential(x):
        n = len(x)
        d = [[float((x[i] - x[j]).norm()) for j in range(n)] for i in range(n)]
        mu = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [[d[i][j] / mu for j in range(n)] for i in range(n)]

    def angle_potential(x):
        n = len(x)
        out = {}
        for a in range(n):
            for b in range(n):
                for c in range(n):
                    if a in (b, c):
                        out[a, b, c] = 0.0
                        continue
                    e1 = (x[b] - x[a]) / (x[b] - x[a]).norm()
                    e2 = (x[c] - x[a]) / (x[c] - x[a]).norm()
                    out[a, b, c] = float((e1 * e2).sum())
        return out

    xs, xt = rows(s), rows(t)
    n = len(xs)
    ds, dt = dist_potential(xs), dist_potential(xt)
    distance = sum(huber(ds[i][j] - dt[i][j]) for i in range(n) for j in range(n)) / n**2
    a_s, a_t = angle_potential(xs), angle_potential(xt)
    angle = sum(huber(a_s[k] - a_t[k]) for k in a_s) / n**3
    return distance, angle


def test_rkd_value_matches_the_formula_with_different_widths():
    s, t = features(7, 3, 0), features(7, 5, 1)
    terms = RKD()(s, t, 1.0)
    distance, angle = rkd_reference(s, t)
    assert set(terms) == {"distance", "angle"}
    close(terms["distance"], 25 * distance)
    close(terms["angle"], 50 * angle)


def test_rkd_on_raw_features_with_custom_weights_and_large_differences():
    s, t = features(6, 4, 2), 10 * features(6, 4, 3, grad=False)
    terms = RKD(distance_weight=1.0, angle_weight=2.0, normalize=False)(s, t)
    distance, angle = rkd_reference(s, t, normalize=False)
    close(terms["distance"], distance)
    close(terms["angle"], 2 * angle)
    only_distance = RKD(angle_weight=0)(s, t)
    assert set(only_distance) == {"distance"}
    with pytest.raises(ValueError, match="nonzero"):
        RKD(distance_weight=0, angle_weight=0)


@pytest.mark.parametrize("weights", [{}, {"angle_weight": 0}, {"distance_weight": 0}])
def test_rkd_is_bidirectional_and_finite_with_duplicate_rows(weights):
    s, t = features(6, 4, 4), features(6, 3, 5)
    with torch.no_grad():
        s[1] = s[0]  # a zero distance off the diagonal must not give NaN gradients
    total = sum(RKD(**weights)(s, t).values())
    total.backward()
    assert s.grad is not None and t.grad is not None
    assert torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_rkd_with_a_single_row_gives_zero_terms():
    s, t = features(1, 4, 6), features(1, 4, 7)
    terms = RKD()(s, t)
    assert all(float(v.detach()) == 0.0 for v in terms.values())
    sum(terms.values()).backward()


# --------------------------------------------------------------------------- queues


def test_feature_queue_is_fifo_and_wraps():
    queue = FeatureQueue(size=10, dim=2)
    start = queue.features.clone()
    assert torch.allclose(queue.features.norm(dim=1), torch.ones(10))
    batches = [torch.full((4, 2), float(k + 1)) for k in range(4)]
    queue.push(batches[0])
    assert torch.equal(queue.features[:4], batches[0])
    assert torch.equal(queue.features[4:], start[4:])
    assert int(queue.ptr) == 4
    queue.push(batches[1])
    queue.push(batches[2])  # slots 8, 9 then 0, 1
    assert torch.equal(queue.features[8:], batches[2][:2])
    assert torch.equal(queue.features[:2], batches[2][2:])
    assert torch.equal(queue.features[2:4], batches[0][2:])
    assert int(queue.ptr) == 2
    big = torch.arange(30, dtype=torch.float).reshape(15, 2)  # more rows than slots
    queue.push(big)
    assert int(queue.ptr) == (2 + 15) % 10
    # as if pushed one by one: row j of the batch lands in slot (2 + j) % 10 for the last 10
    for j in range(5, 15):
        assert torch.equal(queue.features[(2 + j) % 10], big[j])


def test_queue_starts_the_same_on_every_process():
    assert torch.equal(SEED(4, 4, queue_size=8).queue.features,
                       SEED(4, 4, queue_size=8).queue.features)


# --------------------------------------------------------------------------- SEED


def seed_reference(s, t, queue, tau_s, tau_t) -> float:
    total = 0.0
    for i in range(len(s)):
        si, ti = unit(s[i]), unit(t[i])
        anchors = [ti] + [q.double() for q in queue]
        zs = [float((si * a).sum()) / tau_s for a in anchors]
        zt = [float((ti * a).sum()) / tau_t for a in anchors]
        p, log_norm = softmax(zt), max(zs) + math.log(sum(math.exp(z - max(zs)) for z in zs))
        total += -sum(pk * (z - log_norm) for pk, z in zip(p, zs, strict=True))
    return total / len(s)


@pytest.mark.parametrize("temperatures", [{}, {"student_temperature": 0.5,
                                               "teacher_temperature": 0.07}])
def test_seed_value_matches_the_formula(temperatures):
    loss = SEED(4, 4, queue_size=12, **temperatures)
    tau_s = temperatures.get("student_temperature", 0.2)
    tau_t = temperatures.get("teacher_temperature", 1e-4)
    s, t = features(6, 4, 10), features(6, 4, 11)
    queue = loss.queue.features.clone()
    close(loss(s, t, 1.0), seed_reference(s, t, queue, tau_s, tau_t))
    # the second step sees the first teacher batch in the queue
    s2, t2 = features(6, 4, 12), features(6, 4, 13)
    queue2 = loss.queue.features.clone()
    assert torch.allclose(queue2[:6], torch.nn.functional.normalize(t.detach(), dim=1))
    close(loss(s2, t2), seed_reference(s2, t2, queue2, tau_s, tau_t))


def test_seed_gradients_reach_the_student_only():
    s, t = features(6, 4, 14), features(6, 4, 15)
    SEED(4, 4, queue_size=12, teacher_temperature=0.07)(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_seed_queue_fifo_and_frozen_in_eval():
    loss = SEED(3, 3, queue_size=12)
    start = loss.queue.features.clone()
    batches = [features(4, 3, 20 + k) for k in range(4)]
    loss(features(4, 3, 30), batches[0])
    normed = [torch.nn.functional.normalize(b.detach(), dim=1) for b in batches]
    assert torch.allclose(loss.queue.features[:4], normed[0])
    assert torch.equal(loss.queue.features[4:], start[4:])
    for k in (1, 2):  # K / B = 3 steps fill the queue
        loss(features(4, 3, 31 + k), batches[k])
    assert torch.allclose(loss.queue.features, torch.cat(normed[:3]))
    loss(features(4, 3, 40), batches[3])  # the oldest batch goes first
    assert torch.allclose(loss.queue.features, torch.cat([normed[3], *normed[1:3]]))
    before, ptr = loss.queue.features.clone(), int(loss.queue.ptr)
    loss.eval()
    loss(features(4, 3, 41), features(4, 3, 42))
    assert torch.equal(loss.queue.features, before) and int(loss.queue.ptr) == ptr


def test_seed_needs_one_width():
    with pytest.raises(ValueError, match="--embed-dim 5"):
        SEED(4, 5)
    with pytest.raises(ValueError, match="widths must match"):
        SEED(4, 4, queue_size=8)(features(3, 4, 0), features(3, 5, 1))


def test_seed_state_is_checkpointed_and_exact_under_autocast(tmp_path):
    loss = SEED(4, 4, queue_size=8, teacher_temperature=0.01)
    loss(features(4, 4, 50), features(4, 4, 51))
    path = tmp_path / "loss.pt"
    torch.save(loss.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"queue.features", "queue.ptr"} and int(state["queue.ptr"]) == 4
    copy = SEED(4, 4, queue_size=8, teacher_temperature=0.01)
    copy.load_state_dict(state)
    s, t = features(4, 4, 52), features(4, 4, 53)
    expected = seed_reference(s, t, copy.queue.features.clone(), 0.2, 0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = copy(s, t)
    assert value.dtype == torch.float32
    close(value, expected)


# --------------------------------------------------------------------------- CompRess


def kl_reference(t_logits: list[float], s_logits: list[float]) -> float:
    p, q = softmax(t_logits), softmax(s_logits)
    return sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q, strict=True) if pk > 0)


def compress_reference(s, t, student_queue, teacher_queue, tau) -> float:
    total = 0.0
    for i in range(len(s)):
        si, ti = unit(s[i]), unit(t[i])
        zt = [float((ti * q.double()).sum()) / tau for q in teacher_queue]
        zs = [float((si * q.double()).sum()) / tau for q in student_queue]
        total += kl_reference(zt, zs)
    return total / len(s)


def test_compress_1q_value_gradients_and_queue():
    loss = CompRess1q(5, 5, queue_size=8, temperature=0.1)
    s, t = features(4, 5, 60), features(4, 5, 61)
    queue = loss.queue.features.clone()
    value = loss(s, t, 1.0)
    close(value, compress_reference(s, t, queue, queue, 0.1))
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    normed = torch.nn.functional.normalize(t.detach(), dim=1)
    assert torch.allclose(loss.queue.features[:4], normed)
    assert torch.equal(loss.queue.features[4:], queue[4:])
    t2 = features(4, 5, 62)
    loss(features(4, 5, 63), t2)  # K / B = 2 steps fill it
    assert torch.allclose(loss.queue.features,
                          torch.cat([normed, torch.nn.functional.normalize(t2.detach(), dim=1)]))
    loss.eval()
    before = loss.queue.features.clone()
    loss(features(4, 5, 64), features(4, 5, 65))
    assert torch.equal(loss.queue.features, before)
    with pytest.raises(ValueError, match="--embed-dim 6"):
        CompRess1q(5, 6)


def test_compress_1q_default_temperature():
    loss = CompRess1q(3, 3, queue_size=6)
    s, t = features(4, 3, 66), features(4, 3, 67)
    queue = loss.queue.features.clone()
    close(loss(s, t), compress_reference(s, t, queue, queue, 0.04))


def test_compress_2q_value_queues_and_gradients_with_different_widths():
    loss = CompRess2q(3, 6, queue_size=8)
    s, t = features(4, 3, 70), features(4, 6, 71)
    sq, tq = loss.student_queue.features.clone(), loss.teacher_queue.features.clone()
    assert sq.shape == (8, 3) and tq.shape == (8, 6)
    value = loss(s, t)
    close(value, compress_reference(s, t, sq, tq, 0.04))
    value.backward()  # bidirectional: both sides learn
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is not None and t.grad.abs().sum() > 0
    assert torch.allclose(loss.student_queue.features[:4],
                          torch.nn.functional.normalize(s.detach(), dim=1))
    assert torch.allclose(loss.teacher_queue.features[:4],
                          torch.nn.functional.normalize(t.detach(), dim=1))
    assert torch.equal(loss.student_queue.features[4:], sq[4:])
    s2, t2 = features(4, 3, 72), features(4, 6, 73)
    sq2, tq2 = loss.student_queue.features.clone(), loss.teacher_queue.features.clone()
    close(loss(s2, t2), compress_reference(s2, t2, sq2, tq2, 0.04))
    assert int(loss.student_queue.ptr) == 0 and int(loss.teacher_queue.ptr) == 0  # full: 8/4
    loss.eval()
    before = (loss.student_queue.features.clone(), loss.teacher_queue.features.clone())
    loss(features(4, 3, 74), features(4, 6, 75))
    assert torch.equal(loss.student_queue.features, before[0])
    assert torch.equal(loss.teacher_queue.features, before[1])


# --------------------------------------------------------------------------- ProtoCPC


def protocpc_reference(u, v, prior, tau_s=0.1, tau_t=0.04) -> tuple[float, list[float]]:
    total, mass = 0.0, [0.0] * len(prior)
    for i in range(len(u)):
        ui = [float(x) / tau_s for x in u[i]]
        q = softmax([float(x) / tau_t for x in v[i]])
        mass = [m + qk for m, qk in zip(mass, q, strict=True)]
        log_norm = math.log(sum(p * math.exp(x) for p, x in zip(prior, ui, strict=True)))
        total += log_norm - sum(qk * x for qk, x in zip(q, ui, strict=True))
    k = len(prior)
    batch_prior = [m / sum(mass) * k for m in mass]
    new_prior = [0.9 * p + 0.1 * b for p, b in zip(prior, batch_prior, strict=True)]
    return total / len(u), new_prior


def test_protocpc_value_prior_and_gradients():
    loss = ProtoCPC(prototypes=5)
    s, t = features(6, 4, 80), features(6, 4, 81)
    u, v = features(6, 5, 82), features(6, 5, 83)
    expected, prior = protocpc_reference(u.detach(), v.detach(), [1.0] * 5)
    value = loss(s, t, 1.0, student_prototypes=u, teacher_prototypes=v)
    close(value, expected)
    assert loss.prior.tolist() == pytest.approx(prior, rel=1e-5)
    assert float(loss.prior.sum()) == pytest.approx(5.0, rel=1e-5)
    value.backward()
    assert u.grad is not None and u.grad.abs().sum() > 0
    assert v.grad is None
    u2, v2 = features(6, 5, 84), features(6, 5, 85)
    expected2, prior2 = protocpc_reference(u2.detach(), v2.detach(), prior)
    close(loss(s, t, student_prototypes=u2, teacher_prototypes=v2), expected2)
    assert loss.prior.tolist() == pytest.approx(prior2, rel=1e-5)
    loss.eval()
    before = loss.prior.clone()
    loss(s, t, student_prototypes=u, teacher_prototypes=v)
    assert torch.equal(loss.prior, before)


def test_protocpc_needs_prototypes():
    with pytest.raises(ValueError, match="--image-head dino --prototypes N"):
        ProtoCPC(student_dim=4, teacher_dim=4, prototypes=0)
    loss = ProtoCPC(prototypes=3)
    with pytest.raises(ValueError, match="student_prototypes"):
        loss(features(2, 4, 0), features(2, 4, 1))
    with pytest.raises(ValueError, match="3 prototypes"):
        loss(features(2, 4, 0), features(2, 4, 1), student_prototypes=features(2, 4, 2),
             teacher_prototypes=features(2, 4, 3))


# --------------------------------------------------------------------------- SimReg


def test_simreg_value_matches_the_formula_through_the_head():
    loss = SimReg(3, 5)
    linear1, bn, _, linear2 = loss.head
    assert (linear1.in_features, linear1.out_features, linear2.out_features) == (3, 6, 5)
    s, t = features(8, 3, 90), features(8, 5, 91)
    x = s.detach().double()
    h = x @ linear1.weight.detach().double().T + linear1.bias.detach().double()
    mean, var = h.mean(0), h.var(0, unbiased=False)  # training-mode BatchNorm
    h = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight.detach().double() + bn.bias.detach()
    h = h.clamp_min(0) @ linear2.weight.detach().double().T + linear2.bias.detach().double()
    expected = sum(float(((unit(h[i]) - unit(t[i])) ** 2).sum()) for i in range(8)) / 8
    value = loss(s, t, 1.0)
    close(value, expected)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    for name, parameter in loss.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_simreg_head_shapes():
    deep = SimReg(4, 2, depth=4, hidden_dim=7, batch_norm=False)
    widths = [(m.in_features, m.out_features) for m in deep.head if isinstance(m, torch.nn.Linear)]
    assert widths == [(4, 7), (7, 7), (7, 7), (7, 2)]
    linear = SimReg(4, 2, depth=1)
    assert len(linear.head) == 1
    s, t = features(3, 4, 92), features(3, 2, 93)
    p = linear.head(s).detach().double()
    expected = sum(float(((unit(p[i]) - unit(t[i])) ** 2).sum()) for i in range(3)) / 3
    close(linear(s, t), expected)
    with pytest.raises(ValueError, match="at least one layer"):
        SimReg(4, 2, depth=0)


# --------------------------------------------------------------------------- registry


EXPECTED = {"rkd": (RKD, BIDIRECTIONAL, ()), "seed": (SEED, STUDENT_TO_TEACHER, ()),
            "compress-1q": (CompRess1q, STUDENT_TO_TEACHER, ()),
            "compress-2q": (CompRess2q, BIDIRECTIONAL, ()),
            "protocpc": (ProtoCPC, STUDENT_TO_TEACHER, ("prototypes",)),
            "simreg": (SimReg, STUDENT_TO_TEACHER, ())}


def test_registry_lists_the_distillation_losses():
    losses = load_registry().losses
    for name, (cls, direction, needs) in EXPECTED.items():
        assert name in losses, name
        spec = losses[name].item
        assert spec.direction == direction and spec.needs == needs
        assert spec.description and spec.paper
        prototypes = 4 if "prototypes" in needs else 0
        built = spec.factory(student_dim=4, teacher_dim=4, prototypes=prototypes)
        assert isinstance(built, cls)
