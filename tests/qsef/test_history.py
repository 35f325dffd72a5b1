"""History providers: the labelled fast path equals recording every task for every expert."""

from __future__ import annotations

import numpy as np
import pytest

from qsef.history import HistoryProvider, InMemoryHistory, LabelledHistory


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_labelled_history_equals_in_memory():
    rng = np.random.default_rng(0)
    emb = _unit(rng.normal(size=(60, 16)))
    labels = rng.choice(["a", "b", "c"], size=60)
    experts = {"ea": "a", "eb": "b", "ec": "c"}
    fast = LabelledHistory(emb, labels, experts, k=7, max_similarity=0.9999)
    slow = InMemoryHistory(k=7, max_similarity=0.9999)
    for name, dom in experts.items():
        slow.record_many(name, emb, labels == dom)
    q = np.concatenate([_unit(rng.normal(size=(5, 16))), emb[:5]])  # includes the tasks themselves (left out)
    for name in experts:
        np.testing.assert_allclose(fast.error_rates(name, q), slow.error_rates(name, q), atol=1e-6)
    assert isinstance(fast, HistoryProvider) and isinstance(slow, HistoryProvider)
    assert np.isnan(fast.error_rates("unknown", q)).all()


def test_in_memory_none_without_history():
    h = InMemoryHistory()
    assert h.error_rate("x", np.ones(4, dtype=np.float32) / 2) is None
    h.record("x", np.ones(4, dtype=np.float32) / 2, correct=False)
    assert h.error_rate("x", np.ones(4, dtype=np.float32) / 2) == pytest.approx((1 + 0.5) / 2)
