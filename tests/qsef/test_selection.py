"""Selection strategies and the faiss pre-filter (exact == brute force)."""

from __future__ import annotations

import numpy as np
import pytest

from qsef.selection import (
    CandidateFilter,
    brute_force_top_k,
    select_argmax,
    select_cost_aware,
    select_top_k,
    select_with_threshold,
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
    s = select_with_threshold(TE, NAMES, tau=0.5, fallback="d")
    assert s.experts == ["b"] and not s.low_confidence
    s = select_with_threshold(TE, NAMES, tau=0.9, fallback="d")
    assert s.experts == ["d"] and s.low_confidence and "tau" in s.reason


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
