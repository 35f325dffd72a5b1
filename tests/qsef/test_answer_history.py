"""AnswerHistory: measured correctness of each expert near a text."""

from __future__ import annotations

import numpy as np
import pytest

from qsef.history import AnswerHistory, HistoryProvider


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_error_rates_follow_the_neighbours_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    a, b = _unit(rng.normal(size=(1, 8))), _unit(rng.normal(size=(1, 8)))
    emb = _unit(np.concatenate([a + 0.01 * rng.normal(size=(20, 8)), b + 0.01 * rng.normal(size=(20, 8))]))
    correct = np.zeros((40, 2), dtype=bool)
    correct[:20, 0] = True   # expert "x" is right near a, wrong near b
    correct[20:, 1] = True   # expert "y" the reverse
    h = AnswerHistory(emb, correct, ["x", "y"], k=10, prior=1.0)
    assert isinstance(h, HistoryProvider)
    ex = h.error_rates("x", np.concatenate([a, b]))
    assert ex[0] < 0.1 and ex[1] > 0.9
    assert h.error_rate("y", a[0]) > 0.9
    assert np.isnan(h.error_rates("z", a)).all()
    h2 = AnswerHistory.load(h.save(tmp_path / "answers.npz"), k=10, prior=1.0)
    np.testing.assert_allclose(h2.error_rates("x", a), h.error_rates("x", a))
    assert h2.experts == ["x", "y"]


def test_shape_is_checked():
    with pytest.raises(ValueError, match=r"\(N, E\)"):
        AnswerHistory(np.zeros((3, 4)), np.zeros((3, 3), dtype=bool), ["x", "y"])
