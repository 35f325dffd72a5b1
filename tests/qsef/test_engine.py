"""QSEFEngine: formulas, batched == looped, ablation, degradation flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qsef_fixtures import LABELS, QUERIES, HashEncoder, install_toy_kg, make_experts

from core.settings import Settings
from qsef.components import NoKG
from qsef.engine import DEFAULT_CALIBRATION, QSEFEngine, QSEFWeights
from qsef.history import InMemoryHistory
from qsef.scores import ExpertScore, TextScores


@pytest.fixture
def engine(monkeypatch):
    np.random.seed(0)
    enc = HashEncoder()
    return QSEFEngine(make_experts(enc), encoder=enc, weights=QSEFWeights(), kg=install_toy_kg(monkeypatch))


def test_te_formula_and_ranges(engine):
    res = engine.score(QUERIES)
    w = res.weights
    c = res.components
    assert res.TE.shape == (5, 5)
    for name, m in c.items():
        assert np.all((m >= 0) & (m <= 1)), name
    d = w.w1 * c["d_emb"] + w.w2 * c["d_kg"]
    r = w.w_d * c["c_data"] + w.w_m * c["c_model"] + w.w_s * c["c_sparsity"]
    np.testing.assert_allclose(res.D, d, rtol=1e-6)
    np.testing.assert_allclose(res.R, r, rtol=1e-6)
    np.testing.assert_allclose(res.TE, np.exp(-(w.k1 * d + w.k2 * r)), rtol=1e-5)
    assert np.all((res.TE > 0) & (res.TE <= 1))
    emb = engine.encode(QUERIES)
    cos = emb @ np.stack([e.centroid for e in engine.experts]).T
    np.testing.assert_allclose(c["d_emb"], (1 - cos) / 2, atol=1e-6)


def test_routes_toy_queries(engine):
    res = engine.score(QUERIES)
    assert [res.experts[j].domain for j in res.best()] == LABELS
    for i in range(len(QUERIES)):
        assert sorted(s.rank for s in res.ranked(i)) == [1, 2, 3, 4, 5]


def test_batched_equals_looped(engine):
    hist = InMemoryHistory(k=3)
    rng = np.random.default_rng(0)
    for e in engine.experts:
        v = rng.normal(size=(4, 32)).astype(np.float32)
        hist.record_many(e.name, v / np.linalg.norm(v, axis=1, keepdims=True), rng.random(4) > 0.5)
    engine.history = hist
    batched = engine.score(QUERIES)
    for i, q in enumerate(QUERIES):
        for j, e in enumerate(engine.experts):
            one = engine.score([q], [e])
            for name, m in batched.components.items():
                assert one.components[name][0, 0] == pytest.approx(float(m[i, j]), abs=1e-6), (name, i, j)
            assert one.TE[0, 0] == pytest.approx(float(batched.TE[i, j]), rel=1e-5)


def test_ablation_switches_component_off(engine):
    full = engine.score(QUERIES[:2])
    res = engine.score(QUERIES[:2], ablate=["d_kg"])
    assert "d_kg" not in res.components and res.ablated == ["d_kg"]
    assert all(s.D_kg is None for s in res.ranked(0))
    np.testing.assert_allclose(res.D, full.weights.w1 * full.components["d_emb"], rtol=1e-6)
    with pytest.raises(ValueError, match="choose one of"):
        engine.score(QUERIES[:1], ablate=["nope"])


def test_missing_graph_is_flagged_not_silent(engine):
    res = engine.score(["a question about bonds"])
    assert "kg_missing:finance" in res.flags[0] and "kg_missing:general" in res.flags[0]
    assert "no_history" in res.flags[0]
    nokg = QSEFEngine(engine.experts, encoder=engine.encoder, weights=QSEFWeights(), kg=NoKG())
    res = nokg.score(["anything"])
    assert "concept_density_missing" in res.flags[0]
    assert np.all(res.components["d_kg"] == 1.0)


def test_history_raises_model_load_of_failing_expert(engine):
    q = QUERIES[0]
    emb = engine.encode([q])[0]
    hist = InMemoryHistory(k=2, prior=0.0)
    hist.record("medicine", emb, correct=False)
    hist.record("law", emb, correct=True)
    engine.history = hist
    res = engine.score([q])
    cm = dict(zip(res.names, res.components["c_model"][0], strict=True))
    assert cm["medicine"] > cm["law"]
    assert "no_history" not in res.flags[0]


def test_scores_are_typed_and_json(engine):
    res = engine.score(QUERIES[:2])
    typed = res.scores(1)
    assert isinstance(typed, TextScores) and all(isinstance(e, ExpertScore) for e in typed.experts)
    assert typed.experts == res.ranked(1) and [e.rank for e in typed.experts] == [1, 2, 3, 4, 5]
    p = res.probabilities()[1]
    assert sum(e.P for e in typed.experts) == pytest.approx(1.0)
    assert {e.expert: e.P for e in typed.experts} == pytest.approx(dict(zip(res.names, p.tolist(), strict=True)))
    assert sorted(res.breakdown(1), key=lambda e: e.rank) == typed.experts
    s = json.loads(typed.model_dump_json())
    keys = {"expert", "domain", "D_emb", "D_kg", "D", "C_data", "C_model", "C_sparsity", "R", "TE", "P", "rank"}
    assert keys == set(s["experts"][0]) and s["experts"][0]["rank"] == 1 and s["weights"]["k1"] > 0


def test_shipped_calibration_loads():
    w = QSEFWeights.load(DEFAULT_CALIBRATION)
    assert w.k1 > 0 and abs(w.w1 + w.w2 - 1) < 1e-6 and abs(w.w_d + w.w_m + w.w_s - 1) < 1e-6


def test_prefilter_scores_only_nearest_candidates(engine):
    rng = np.random.default_rng(0)
    base = engine.experts
    many = [b.with_centroid(b.centroid + rng.normal(scale=0.05, size=b.centroid.shape), name=f"{b.name}-{i}")
            for i in range(20) for b in base]
    engine.prefilter_k, engine.prefilter_min = 8, 50
    res = engine.score(QUERIES[:2], many)
    assert len(res.experts) < len(many) and res.flags[0][-1].startswith("prefiltered:")
    # the exact search keeps every expert that brute force ranks in the top 8 for either text
    emb = engine.encode(QUERIES[:2])
    sims = emb @ np.stack([e.centroid for e in many]).T
    top = {many[j].name for row in np.argsort(-sims, axis=1)[:, :8] for j in row}
    assert top == set(res.names)
    full = QSEFEngine(many, encoder=engine.encoder, weights=engine.weights, kg=engine.kg, prefilter_min=10_000)
    whole = full.score(QUERIES[:2])
    col = {n: j for j, n in enumerate(whole.names)}
    for j, n in enumerate(res.names):
        np.testing.assert_allclose(res.TE[:, j], whole.TE[:, col[n]], rtol=1e-5)


def test_probabilities_are_te_shares(engine):
    res = engine.score(QUERIES)
    p = res.probabilities()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(np.argmax(p, axis=1), res.best())
    top = res.ranked(0)[0]
    assert abs(top.P - float(p[0].max())) < 1e-5


def test_calibration_picks_weights_for_history_state(tmp_path, engine):
    f = tmp_path / "cal.json"
    f.write_text(json.dumps({"format": 1, "version": "x", "weights": {"k1": 1.0, "k2": 9.0},
                             "weights_no_history": {"k1": 7.0, "k2": 2.0}}))
    e = QSEFEngine(engine.experts, encoder=engine.encoder, weights=f, kg=engine.kg)
    assert e.weights.k1 == 7.0
    e.history = InMemoryHistory()
    assert e.weights.k1 == 1.0


def test_texts_without_history_use_no_history_weights(tmp_path, engine):
    f = tmp_path / "cal.json"
    f.write_text(json.dumps({"format": 1, "version": "x", "weights": {"k1": 1.0, "k2": 9.0},
                             "weights_no_history": {"k1": 7.0, "k2": 2.0}}))
    e = QSEFEngine(engine.experts, encoder=engine.encoder, weights=f, kg=engine.kg, history=InMemoryHistory())
    res = e.score(QUERIES[:2])  # the history is empty: every text is "no_history"
    plain = QSEFEngine(engine.experts, encoder=engine.encoder, weights=f, kg=engine.kg).score(QUERIES[:2])
    np.testing.assert_allclose(res.TE, plain.TE, rtol=1e-6)
    hist = InMemoryHistory(min_similarity=0.99)  # only the identical task counts as similar
    hist.record("law", e.encode([QUERIES[1]])[0], correct=True)
    e.history = hist
    mixed = e.score(QUERIES[:2])
    assert "no_history" not in mixed.flags[1]
    np.testing.assert_allclose(mixed.TE[0], plain.TE[0], rtol=1e-6)
    assert not np.allclose(mixed.TE[1], plain.TE[1])


def test_kg_distance_setting_picks_the_d_kg_variant(tmp_path):
    d_kg = next(c for c in QSEFEngine(experts=[], weights=QSEFWeights(),
                                      settings=Settings(home=tmp_path, kg_distance="lca")).components
                if c.name == "d_kg")
    assert d_kg.variant == "lca"
    with pytest.raises(ValueError, match="kg_distance"):
        Settings(home=tmp_path, kg_distance="cosmic")

