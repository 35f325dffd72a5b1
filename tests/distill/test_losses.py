"""Each distillation loss equals its plain formula on tiny random tensors; the resolver works."""

import math

import pytest
import torch

from core.resolver import UnknownComponentError
from distill.losses import (
    AlignmentLoss,
    AlphaMixLoss,
    JSDLoss,
    KDLoss,
    ResistanceWeightedLoss,
    ReverseKLLoss,
    TotalLoss,
    loss_resolver,
)

B, T, V = 2, 5, 99


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _soft(logits, temp):
    return torch.softmax(logits.double() / temp, -1).tolist()


def test_kd_is_t2_scaled_token_mean_kl():
    s, t = torch.randn(B, T, V), torch.randn(B, T, V)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 3:] = False
    temp = 2.5
    ref = [temp**2 * _kl(_soft(t[b, i], temp), _soft(s[b, i], temp)) for b in range(B) for i in range(T) if mask[b, i]]
    got = KDLoss(temp)(s, t, mask=mask)
    assert got.item() == pytest.approx(sum(ref) / len(ref), rel=1e-4)


def test_kd_with_sparse_teacher_renormalises_over_kept_tokens():
    s, t = torch.randn(3, V), torch.randn(3, V)
    keep = torch.topk(t, 8, -1).indices
    sparse = torch.full_like(t, float("-inf")).scatter(-1, keep, t.gather(-1, keep))
    ref = 0.0
    for n in range(3):
        p = torch.zeros(V, dtype=torch.float64)
        p[keep[n]] = torch.softmax(t[n, keep[n]].double(), -1)
        ref += _kl(p.tolist(), _soft(s[n], 1.0))
    assert KDLoss()(s, sparse).item() == pytest.approx(ref / 3, rel=1e-4)


def test_kd_with_teacher_probs_equals_kd_with_logits():
    s, t = torch.randn(4, V), torch.randn(4, V)
    a = KDLoss(2.0)(s, t)
    b = KDLoss(2.0)(s, teacher_probs=torch.softmax(t / 2.0, -1))
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    assert KDLoss()(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_reverse_kl_and_jsd_match_formulas():
    s, t = torch.randn(3, V), torch.randn(3, V)
    rev = sum(4 * _kl(_soft(s[n], 2.0), _soft(t[n], 2.0)) for n in range(3)) / 3
    assert ReverseKLLoss(2.0)(s, t).item() == pytest.approx(rev, rel=1e-4)
    jsd = 0.0
    for n in range(3):
        p, q = _soft(t[n], 1.0), _soft(s[n], 1.0)
        m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
        jsd += 0.5 * (_kl(p, m) + _kl(q, m))
    assert JSDLoss()(s, t).item() == pytest.approx(jsd / 3, rel=1e-4)
    assert 0 <= JSDLoss()(s, t).item() <= math.log(2)


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_alignment_projects_mean_pooled_student(kind):
    loss = AlignmentLoss(8, 6, kind=kind)
    h, e = torch.randn(B, T, 8), torch.randn(B, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pooled = torch.stack([h[0, :3].mean(0), h[1].mean(0)])
    z = loss.proj(pooled)
    ref = ((z - e) ** 2).mean() if kind == "mse" else (1 - torch.nn.functional.cosine_similarity(z, e)).mean()
    assert loss(h, e, mask).item() == pytest.approx(ref.item(), rel=1e-5)


def test_resistance_weighted_task_loss():
    s, y = torch.randn(B, T, V), torch.randint(0, V, (B, T))
    y[0, 4] = -100
    r = torch.tensor([0.2, 0.8])
    ce = torch.nn.functional.cross_entropy
    per = torch.stack([ce(s[0, :4], y[0, :4]), ce(s[1], y[1])])
    ref = (r * per).sum() / r.sum()
    assert ResistanceWeightedLoss()(s, y, r).item() == pytest.approx(ref.item(), rel=1e-5)
    assert ResistanceWeightedLoss()(s, y).item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_alpha_mix_and_total():
    s, t, y = torch.randn(B, T, V), torch.randn(B, T, V), torch.randint(0, V, (B, T))
    ce = torch.nn.functional.cross_entropy(s.reshape(-1, V), y.reshape(-1))
    kd = KDLoss(2.0)(s, t)
    assert AlphaMixLoss(0.3, 2.0)(s, y, t).item() == pytest.approx((0.3 * ce + 0.7 * kd).item(), rel=1e-5)

    align = AlignmentLoss(8, 6)
    total = TotalLoss(KDLoss(2.0), {"minilm": align}, lambda_align=0.5, lambda_resist=0.25)
    h, e, r = torch.randn(B, T, 8), torch.randn(B, 6), torch.rand(B)
    out = total(s, y, t, student_hidden=h, teacher_embeddings={"minilm": e}, resistance=r)
    want = kd + 0.5 * align(h, e) + 0.25 * ResistanceWeightedLoss()(s, y, r)
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-5)
    assert set(out) == {"kd", "align", "resist", "loss"}
    assert set(TotalLoss(lambda_align=0)(s, y)) == {"resist", "loss"}


def test_loss_resolver():
    assert isinstance(loss_resolver.make("kd", temperature=3.0), KDLoss)
    assert isinstance(loss_resolver.make("reverse_kl"), ReverseKLLoss)
    assert isinstance(loss_resolver.make(JSDLoss), JSDLoss)
    inst = KDLoss()
    assert loss_resolver.make(inst) is inst
    assert loss_resolver.make("alignment", {"student_dim": 4}, teacher_dim=3).proj.out_features == 3
    with pytest.raises(UnknownComponentError, match="choose one of"):
        loss_resolver.make("nope")


def test_total_loss_drops_ignored_classes_from_kd_only():
    s, t, y = torch.randn(B, T, V), torch.randn(B, T, V), torch.randint(0, V, (B, T))
    t[..., 0] = float("-inf")  # the teacher never covers class 0
    out = TotalLoss(KDLoss(), lambda_align=0, kd_ignore_classes=(0,))(s, y, t)
    want = KDLoss()(s[..., 1:], t[..., 1:])
    assert out["kd"].item() == pytest.approx(want.item(), rel=1e-5)
    assert out["resist"].item() == pytest.approx(ResistanceWeightedLoss()(s, y).item(), rel=1e-6)
    for loss in (ReverseKLLoss(), JSDLoss()):
        assert torch.isfinite(loss(s.index_fill(-1, torch.tensor([0]), float("-inf")), t))


@pytest.mark.parametrize("loss", [KDLoss(2.0), ReverseKLLoss(2.0), JSDLoss(2.0)])
def test_gradients_stay_finite_with_excluded_classes(loss):
    s = torch.randn(3, V, requires_grad=True)
    t = torch.randn(3, V)
    t[:, 0] = float("-inf")
    out = loss(s.index_fill(-1, torch.tensor([0]), float("-inf")), t)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(s.grad).all()


def test_every_registered_component_is_tested_here_or_in_the_sibling_modules():
    """Meta-test (pykeen style): a new loss, aggregator or sampler must come with its own test."""
    from distill.aggregation import teacher_aggregator_resolver
    from distill.data import sampler_resolver

    assert loss_resolver.options == ["alignment", "alphamix", "jsd", "kd", "resistanceweighted", "reversekl", "total"]
    assert teacher_aggregator_resolver.options == ["arithmetic", "confidence", "geometric"]
    assert sampler_resolver.options == ["difficulty", "epoch", "loss", "uniform"]
