"""Property tests (hypothesis) for the aggregation axioms of seed 004."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.aggregation import (
    ArithmeticAggregator,
    ConfidenceAggregator,
    GeometricAggregator,
    soften,
    teacher_aggregator_resolver,
)

ALL = [ArithmeticAggregator(), GeometricAggregator(), ConfidenceAggregator()]
MIXTURES = [ArithmeticAggregator(), ConfidenceAggregator()]
FAST = settings(max_examples=40, deadline=None)


@st.composite
def teachers(draw, k_max=4, v_max=7):
    k = draw(st.integers(2, k_max))
    v = draw(st.integers(2, v_max))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, 3, v, generator=g, dtype=torch.float64) * draw(st.floats(0.1, 4.0))
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.05
    return torch.softmax(logits, -1), w


def _is_distribution(p):
    return torch.allclose(p.sum(-1), torch.ones_like(p.sum(-1)), atol=1e-9) and (p >= 0).all()


@FAST
@given(teachers(), st.sampled_from(MIXTURES))
def test_convexity_of_mixtures(data, agg):
    probs, w = data
    a = agg(probs, w)
    assert (a >= probs.min(0).values - 1e-12).all() and (a <= probs.max(0).values + 1e-12).all()


@FAST
@given(teachers())
def test_geometric_is_convex_in_log_space(data):
    probs, w = data
    a = GeometricAggregator()(probs, w)
    wn = w / w.sum()
    log_z = torch.logsumexp(torch.einsum("k,k...->...", wn, probs.log()), -1, keepdim=True)
    shifted = a.log() + log_z
    logs = probs.log()
    assert (shifted >= logs.min(0).values - 1e-9).all() and (shifted <= logs.max(0).values + 1e-9).all()


@FAST
@given(teachers(), st.sampled_from(ALL), st.floats(0.5, 5.0))
def test_positivity_and_normalisation(data, agg, temp):
    probs, w = data
    a = agg(probs, w, temperature=temp)
    assert _is_distribution(a) and (a > 0).all()


@FAST
@given(teachers(), st.sampled_from(ALL))
def test_continuity(data, agg):
    probs, w = data
    eps = 1e-7
    noise = torch.softmax(probs.log() + eps * torch.randn_like(probs), -1)
    assert (agg(noise, w) - agg(probs, w)).abs().max() < 1e-5
    assert (agg(probs, w * (1 + eps)) - agg(probs, w)).abs().max() < 1e-9  # scale-free in weights
    w2 = w.clone()
    w2[0] += eps
    assert (agg(probs, w2) - agg(probs, w)).abs().max() < 1e-5


def _distance(agg, a, p):
    if isinstance(agg, GeometricAggregator):  # e-geodesic: KL(A || p_k) decreases
        return (a * (a.log() - p.log())).sum(-1)
    return (a - p).abs().sum(-1)  # m-geodesic: L1 distance decreases


@FAST
@given(teachers(), st.sampled_from(ALL), st.floats(0.01, 5.0), st.integers(0, 3))
def test_weight_monotonicity(data, agg, delta, k):
    probs, w = data
    k = k % probs.shape[0]
    w_up = w.clone()
    w_up[k] += delta
    before, after = _distance(agg, agg(probs, w), probs[k]), _distance(agg, agg(probs, w_up), probs[k])
    assert (after <= before + 1e-9).all()


@FAST
@given(teachers(), st.sampled_from(ALL), st.floats(0.3, 6.0))
def test_temperature_coherence(data, agg, temp):
    probs, w = data
    unanimous = probs[:1].expand_as(probs)
    assert torch.allclose(agg(unanimous, w, temperature=temp), soften(probs[0], temp), atol=1e-9)
    assert torch.allclose(agg(probs, w, temperature=1.0), agg(probs, w), atol=0)
    hot = agg(probs, w, temperature=1e4)
    assert torch.allclose(hot, torch.full_like(hot, 1 / hot.shape[-1]), atol=1e-3)
    if isinstance(agg, GeometricAggregator):
        assert torch.allclose(agg(probs, w, temperature=temp), soften(agg(probs, w), temp), atol=1e-9)


def test_soften_matches_logit_scaling():
    logits = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(soften(torch.softmax(logits, -1), 3.0), torch.softmax(logits / 3.0, -1))


def test_confidence_weights_favour_the_sharp_teacher():
    sharp = torch.tensor([[0.97, 0.01, 0.01, 0.01]], dtype=torch.float64)
    flat = torch.full((1, 4), 0.25, dtype=torch.float64)
    a = ConfidenceAggregator()(torch.stack([sharp, flat]))
    assert a[0, 0] > ArithmeticAggregator()(torch.stack([sharp, flat]))[0, 0]


def test_bad_weights_and_resolver():
    probs = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="non-negative"):
        ArithmeticAggregator()(probs, torch.tensor([-1.0, 2.0]))
    assert isinstance(teacher_aggregator_resolver.make("log-linear"), GeometricAggregator)
    assert isinstance(teacher_aggregator_resolver.make(None), ArithmeticAggregator)
    assert teacher_aggregator_resolver.options == ["arithmetic", "confidence", "geometric"]
    assert math.isclose(teacher_aggregator_resolver.make("mean")(probs).sum().item(), 1.0, rel_tol=1e-6)
