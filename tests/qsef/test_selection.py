"""Selection strategies and the faiss pre-filter (exact == brute force)."""

from __future__ import annotations

import numpy as np
import pytest

from qsef.selection import (
    ArgmaxSelection,
    CandidateFilter,
    CostAwareSelection,
    SelectionStrategy,
    TopKSelection,
    brute_force_top_k,
    choice_probabilities,
    select_argmax,
    select_cost_aware,
    select_top_k,
    select_with_threshold,
    selection_strategy_resolver,
)

NAMES = ["a", "b", "c", "d"]
TE = np.array([0.2, 0.7, 0.5, 0.1])


def test_argmax_and_top_k():
    assert select_argmax(TE, NAMES).experts == ["b"]
    s = select_top_k(TE, NAMES, k=2)
    assert s.experts == ["b", "c"]
    assert s.weights == pytest.approx([0.7 / 1.2, 0.5 / 1.2]) and sum(s.weights) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        select_top_k(TE, NAMES, k=0)


def test_cost_aware_maximises_sum_te_minus_cost():
    costs = [1.0, 10.0, 1.0, 1.0]
    s = select_cost_aware(TE, NAMES, costs, lam=0.15)
    # margins: a .05, b -.8, c .35, d -.05 -> {c, a}
    assert s.experts == ["c", "a"] and not s.low_confidence
    s = select_cost_aware(TE, NAMES, costs, lam=1.0)
    assert s.low_confidence and len(s.experts) == 1
    with pytest.raises(ValueError):
        select_cost_aware(TE, NAMES, [1.0], lam=0.1)


def test_threshold_fallback_flags_low_confidence():
    # P of the best expert b = 0.7 / 1.5 = 0.467: above tau 0.4, under tau 0.5
    s = select_with_threshold(TE, NAMES, tau=0.4, fallback="d")
    assert s.experts == ["b"] and not s.low_confidence and s.te == [0.7]
    s = select_with_threshold(TE, NAMES, tau=0.5, fallback="d")
    assert s.experts == ["d"] and s.low_confidence and "P 0.467" in s.reason and "tau" in s.reason


def test_threshold_compares_the_calibrated_share_not_raw_te():
    """tau is on P = TE / sum TE, so rescaling TE (a recalibrated k1, k2) does not move the decision."""
    for scale in (1e-3, 1.0, 50.0):
        assert select_with_threshold(TE * scale, NAMES, tau=0.45, fallback="d").experts == ["b"]
        assert select_with_threshold(TE * scale, NAMES, tau=0.48, fallback="d").experts == ["d"]
    np.testing.assert_allclose(choice_probabilities(np.stack([TE, 2 * TE])), np.stack([TE, TE]) / TE.sum())


@pytest.mark.parametrize("name", selection_strategy_resolver.names)
def test_every_strategy_through_the_resolver_equals_its_function(name):
    costs = [1.0, 10.0, 1.0, 1.0]
    expected = {"argmax": select_argmax(TE, NAMES), "top_k": select_top_k(TE, NAMES, k=3),
                "cost_aware": select_cost_aware(TE, NAMES, costs, lam=0.15, max_experts=2),
                "threshold": select_with_threshold(TE, NAMES, tau=0.5, fallback="d")}[name]
    kwargs = {"top_k": {"k": 3}, "cost_aware": {"lam": 0.15, "max_experts": 2},
              "threshold": {"tau": 0.5, "fallback": "d"}}.get(name, {})
    strategy = selection_strategy_resolver.make(name, kwargs)
    assert isinstance(strategy, SelectionStrategy) and strategy.name == name
    assert strategy.select(TE, NAMES, costs=costs) == expected


def test_strategy_resolver_names_and_errors():
    assert selection_strategy_resolver.options == ["argmax", "cost_aware", "threshold", "top_k"]
    assert isinstance(selection_strategy_resolver.make("top-k"), TopKSelection)
    assert isinstance(selection_strategy_resolver.make(None), ArgmaxSelection)
    with pytest.raises(ValueError, match=r"unknown selection strategy 'magic'; choose one of \['argmax'"):
        selection_strategy_resolver.make("magic")
    with pytest.raises(ValueError, match="one cost per expert"):
        CostAwareSelection().select(TE, NAMES)


@pytest.mark.parametrize("n", [5, 100, 1000])
def test_faiss_prefilter_equals_brute_force(n):
    rng = np.random.default_rng(0)
    c = rng.normal(size=(n, 48)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = rng.normal(size=(7, 48)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k = min(10, n)
    f = CandidateFilter(c, min_experts=0)
    fs, fi = f.search(q, k)
    bs, bi = brute_force_top_k(c, q, k)
    np.testing.assert_array_equal(fi, bi)
    np.testing.assert_allclose(fs, bs, atol=1e-5)
    np.testing.assert_array_equal(f.candidates(q, k), np.unique(bi))
    assert len(CandidateFilter(c, min_experts=10_000).candidates(q, k)) == n
