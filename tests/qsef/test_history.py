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


def test_hybrid_history_uses_lexical_neighbours():
    texts = ["court contract statute", "court judge ruling", "python loop function", "python compile error"]
    labels = np.array(["law", "law", "code", "code"])
    emb = _unit(np.eye(4, 8, dtype=np.float32) + 0.01)
    h = LabelledHistory(emb, labels, {"law": "law", "code": "code"}, k=2, texts=texts, lexical_weight=1.0)
    q = _unit(np.ones((1, 8), dtype=np.float32))  # dense neighbours uninformative
    law = h.error_rates("law", q, texts=["the court and the statute"])[0]
    code = h.error_rates("code", q, texts=["the court and the statute"])[0]
    assert law < code
    assert getattr(h, "uses_text", False)


def test_temperature_kernel_prefers_nearest():
    emb = _unit(np.array([[1, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32))
    labels = np.array(["a", "b", "b"])
    q = _unit(np.array([[1.0, 0.05]], dtype=np.float32))
    sharp = LabelledHistory(emb, labels, {"ea": "a"}, k=3, temperature=0.01, prior=0.0)
    flat = LabelledHistory(emb, labels, {"ea": "a"}, k=3, prior=0.0)
    assert sharp.error_rates("ea", q)[0] < 0.05 < flat.error_rates("ea", q)[0]


def test_balanced_history_favours_no_domain_on_unfamiliar_questions():
    # three "a" tasks per "b" task; a question equally far from all of them
    emb = _unit(np.eye(8, 16, dtype=np.float32))
    labels = np.array(["a"] * 6 + ["b"] * 2)
    q = _unit(np.ones((1, 16), dtype=np.float32) * np.r_[np.ones(8), np.zeros(8)])
    experts = {"ea": "a", "eb": "b"}
    plain = LabelledHistory(emb, labels, experts, k=8, prior=0.0)
    balanced = LabelledHistory(emb, labels, experts, k=8, prior=0.0, balance=True)
    assert plain.error_rates("ea", q)[0] == pytest.approx(0.25) and plain.error_rates("eb", q)[0] == pytest.approx(0.75)
    assert balanced.error_rates("ea", q)[0] == pytest.approx(0.5) == balanced.error_rates("eb", q)[0]
    # a near neighbour still decides
    near = _unit(emb[6:7] + 0.05)
    assert balanced.error_rates("eb", near)[0] < balanced.error_rates("ea", near)[0]


def test_chained_history_asks_providers_in_order():
    import numpy as np

    from qsef.history import ChainedHistory, InMemoryHistory

    rng = np.random.default_rng(0)
    known = rng.normal(size=(4, 8)).astype(np.float32)
    known /= np.linalg.norm(known, axis=1, keepdims=True)
    feedback = InMemoryHistory(k=2, min_similarity=0.9)
    feedback.record_many("law", known[:2], np.array([True, True]))

    class Seed:  # a provider that knows every text: error 0.75
        def error_rate(self, expert_name, text_embedding):
            return 0.75

    chain = ChainedHistory(feedback, None, Seed())
    rates = chain.error_rates("law", known)
    assert rates[0] < 0.75 and rates[1] < 0.75  # feedback knows these: its answer wins
    assert np.allclose(rates[2:], 0.75)  # the seed fills what feedback does not know
    assert ChainedHistory(feedback).error_rate("law", known[3]) is None


def test_shrinkage_trusts_near_duplicates_and_discounts_far_neighbours():
    """With ``shrink`` the error rate moves toward 0.5 as the nearest past tasks get less similar."""
    from qsef.history import InMemoryHistory, LabelledHistory

    rng = np.random.default_rng(0)
    past = rng.normal(size=(20, 8)).astype(np.float32)
    past /= np.linalg.norm(past, axis=1, keepdims=True)
    labels = np.array(["a"] * 20)
    near = past[0] + 0.01  # a near-duplicate of past tasks labelled "a"
    far = rng.normal(size=8).astype(np.float32)
    q = np.stack([near / np.linalg.norm(near), far / np.linalg.norm(far)])
    plain = LabelledHistory(past, labels, {"eb": "b"}, k=3, prior=0.0).error_rates("eb", q)
    shrunk = LabelledHistory(past, labels, {"eb": "b"}, k=3, prior=0.0, shrink=True).error_rates("eb", q)
    assert plain[0] == pytest.approx(1.0) and plain[1] == pytest.approx(1.0)  # expert b always failed
    assert 0.5 < shrunk[1] < shrunk[0] <= 1.0  # far neighbours count less than near-duplicates
    mem = InMemoryHistory(k=3, prior=0.0, shrink=True)
    mem.record_many("eb", past, np.zeros(20, dtype=bool))
    np.testing.assert_allclose(mem.error_rates("eb", q), shrunk, atol=1e-5)


def test_neighbour_cache_is_keyed_by_content_not_identity():
    """Two batches with equal contents share one search; a different batch never gets the cached one."""
    from qsef.history import LabelledHistory

    rng = np.random.default_rng(1)
    past = rng.normal(size=(30, 6)).astype(np.float32)
    past /= np.linalg.norm(past, axis=1, keepdims=True)
    labels = np.array(["a"] * 15 + ["b"] * 15)
    h = LabelledHistory(past, labels, {"ea": "a", "eb": "b"}, k=3, prior=0.0)
    a, b = past[:2].copy(), past[20:22].copy()
    first = h.error_rates("ea", a)
    assert h._neighbours(a.copy()) is h._neighbours(a)  # equal content, other object: cached
    fresh = LabelledHistory(past, labels, {"ea": "a", "eb": "b"}, k=3, prior=0.0)
    np.testing.assert_allclose(h.error_rates("ea", b), fresh.error_rates("ea", b))
    np.testing.assert_allclose(h.error_rates("ea", a), first)
