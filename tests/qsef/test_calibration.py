"""Conditional-logit calibration recovers known weights; files are versioned and loadable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qsef_fixtures import LABELS, QUERIES, HashEncoder, install_toy_kg, make_experts

from qsef.calibration import (
    calibrate,
    cross_validate,
    fit_conditional_logit,
    kfold_indices,
    load_calibration,
    save_calibration,
)
from qsef.engine import QSEFEngine, QSEFWeights


def _simulate(beta, n=3000, e=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, e, len(beta)))
    logits = -(x @ beta)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(e, p=row) for row in p])
    return x, y


def test_fit_recovers_simulated_coefficients():
    beta = np.array([6.0, 2.0, 0.0, 3.0])
    x, y = _simulate(beta)
    fit = fit_conditional_logit(x, y, ["d_emb", "d_kg", "c_model", "c_sparsity"], l2=0.0)
    got = np.array(list(fit.beta.values()))
    np.testing.assert_allclose(got, beta, atol=0.6)
    assert all(v >= 0 for v in fit.beta.values())
    w = fit.weights
    assert w.k1 * w.w1 == pytest.approx(fit.beta["d_emb"], rel=1e-6)
    assert w.k2 * w.w_s == pytest.approx(fit.beta["c_sparsity"], rel=1e-6)
    assert w.w_d + w.w_m + w.w_s == pytest.approx(1.0)


def test_kfold_partitions_and_cv():
    folds = kfold_indices(103, 5, labels=np.arange(103) % 3)
    allidx = np.concatenate(folds)
    assert sorted(allidx.tolist()) == list(range(103)) and len(folds) == 5
    x, y = _simulate(np.array([5.0, 1.0]), n=500)
    cv = cross_validate(x, y, ["d_emb", "d_kg"], k=5)
    assert len(cv["accuracy_folds"]) == 5 and 0.2 < cv["accuracy"] <= 1


def test_calibrate_writes_versioned_file(tmp_path, monkeypatch):
    enc = HashEncoder()
    engine = QSEFEngine(make_experts(enc), encoder=enc, weights=QSEFWeights(), kg=install_toy_kg(monkeypatch))
    rows = [{"text": q, "domain": d} for q, d in zip(QUERIES * 4, LABELS * 4, strict=True)]
    out = tmp_path / "cal.json"
    fit = calibrate(engine, rows, k=2, out=out)
    doc = load_calibration(out)
    assert doc["version"].endswith("-1") and doc["data"]["n"] == 20
    assert QSEFWeights.load(out) == fit.weights
    save_calibration(fit, out)
    assert json.loads(out.read_text())["version"].endswith("-2")
    with pytest.raises(ValueError, match="no expert has"):
        calibrate(engine, [{"text": "x", "domain": "astrology"}])


# -- the outcome fit: calibration on which experts answered correctly ------------------------------------------

NAMES = ["d_emb", "d_kg", "c_model", "c_sparsity"]


def _answers(n=3000, e=3, seed=0):
    """``x (N, E, 4)``: d_emb equal for every expert of a question (cancels from P), c_model informative,
    c_sparsity noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, e, 4))
    x[:, :, 0] = rng.random((n, 1))
    x[:, :, 2] = rng.random((n, e))
    x[:, :, 3] = rng.random((n, e))
    return rng, x


def test_set_nll_is_the_label_nll_for_one_correct_expert_and_its_gradient_is_exact():
    from qsef.calibration import _nll_grad, _set_nll_grad

    rng, x = _answers(n=50, e=4)
    beta = np.array([1.0, 0.5, 3.0, 2.0])
    y = rng.integers(0, 4, 50)
    logits = -(x @ beta)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert _nll_grad(beta, x, y, 0.0)[0] == pytest.approx(-np.log(p[np.arange(50), y]).mean())
    target = rng.random((50, 4)) < 0.5
    target[np.arange(50), y] = True
    f, g = _set_nll_grad(beta, x, target, 1e-2)
    eps = 1e-6
    num = [(_set_nll_grad(beta + eps * d, x, target, 1e-2)[0] - _set_nll_grad(beta - eps * d, x, target, 1e-2)[0])
           / (2 * eps) for d in np.eye(4)]
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)
    assert f == pytest.approx(-np.log((p * target).sum(1)).mean() + 0.5e-2 * beta @ beta)


def test_outcome_fit_recovers_the_informative_weight_and_keeps_the_rest_at_the_prior():
    """One expert right per question, drawn from P(β_true): the set likelihood is the label likelihood, so
    the fit must find β_true; d_emb is equal for every expert, cancels, and keeps its prior."""
    from qsef.calibration import fit_outcome_logit

    rng, x = _answers()
    beta_true = np.array([0.0, 0.0, 5.0, 0.0])
    logits = -(x @ beta_true)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    correct = np.zeros(p.shape, dtype=bool)
    correct[np.arange(len(p)), [rng.choice(3, p=row) for row in p]] = True
    fit = fit_outcome_logit(x, correct, NAMES, prior={"d_emb": 2.5, "d_kg": 0.7, "c_data": 3.0}, l2=0.0)
    assert fit.kind == "answers" and fit.identified == ["c_model", "c_sparsity"]  # d_kg: 0 everywhere, d_emb equal
    assert fit.beta["c_model"] == pytest.approx(5.0, abs=0.6) and fit.beta["c_sparsity"] < 0.6
    assert fit.beta["d_emb"] == 2.5 and fit.beta["d_kg"] == 0.7
    assert fit.weights.coefficients()["c_data"] == pytest.approx(3.0)  # C_data's coefficient kept too
    assert fit.weights.coefficients()["c_model"] == pytest.approx(fit.beta["c_model"])
    assert fit.counts == {"n": 3000, "used": 3000, "no_correct": 0, "all_correct": 0}


def test_outcome_fit_puts_p_on_the_experts_that_are_right():
    """Several experts right per question, each with a chance falling with c_model: P must rank the right
    experts higher on held-out questions than an uninformative weight does."""
    from qsef.calibration import fit_outcome_logit, outcome_metrics

    rng, x = _answers(n=4000)
    correct = rng.random((4000, 3)) < 1 / (1 + np.exp(-(2.0 - 5.0 * x[:, :, 2])))
    fit = fit_outcome_logit(x[:2000], correct[:2000], NAMES)
    assert fit.beta["c_model"] > 2.0 and fit.beta["c_model"] > 5 * fit.beta["c_sparsity"]
    held = outcome_metrics(x[2000:], correct[2000:], np.array([fit.beta[c] for c in NAMES]))
    flat = outcome_metrics(x[2000:], correct[2000:], np.zeros(4))
    assert held["p_spearman"] > 0.15 and held["nll"] < flat["nll"]
    assert held["accuracy"] > correct[2000:].mean() + 0.1  # the highest-P expert beats a random pick
    assert fit.counts["no_correct"] > 0 and fit.counts["all_correct"] > 0


def test_a_question_no_expert_answered_is_left_out_and_counted():
    from qsef.calibration import fit_outcome_logit

    rng, x = _answers(n=600)
    correct = rng.random((600, 3)) < 1 / (1 + np.exp(-(1.0 - 4.0 * x[:, :, 2])))
    correct[:100] = False
    fit = fit_outcome_logit(x, correct, NAMES)
    alone = fit_outcome_logit(x[100:], correct[100:], NAMES)
    assert fit.counts["no_correct"] >= 100 and fit.counts["used"] == 600 - fit.counts["no_correct"]
    assert fit.beta == pytest.approx(alone.beta, rel=1e-6)  # they carry nothing about which expert is better
    assert fit.accuracy == pytest.approx(alone.accuracy * 500 / 600)  # but they count as misses of the router


@pytest.mark.parametrize(("change", "message"), [
    (lambda x, c: (x[:, :, 0], c), r"x must be \(N, E, F\)"),
    (lambda x, c: (x, c[:, :2]), r"correct must be \(N, E\)"),
    (lambda x, c: (x[:, :1], c[:, :1]), "at least 2 experts"),
    (lambda x, c: (np.where(np.arange(4) == 2, np.nan, x), c), "non-finite"),
    (lambda x, c: (x, c.astype(float) * 2), "booleans"),
    (lambda x, c: (x, np.zeros_like(c)), "answered correctly by any expert"),
    (lambda x, c: (x, np.ones_like(c)), "answered alike by all experts"),
    (lambda x, c: (np.repeat(x[:, :1], 3, axis=1), c), "no component differs"),
])
def test_outcome_fit_rejects_bad_input(change, message):
    from qsef.calibration import fit_outcome_logit

    rng, x = _answers(n=40)
    correct = rng.random((40, 3)) < 0.5
    x2, c2 = change(x, correct)
    with pytest.raises(ValueError, match=message):
        fit_outcome_logit(x2, c2, NAMES)
    with pytest.raises(ValueError, match="names for"):
        fit_outcome_logit(x, correct, NAMES[:3])


def test_an_answers_calibration_is_its_own_kind_and_never_replaces_the_shipped_one(tmp_path):
    from qsef.calibration import fit_outcome_logit
    from qsef.engine import DEFAULT_CALIBRATION

    rng, x = _answers(n=200)
    fit = fit_outcome_logit(x, rng.random((200, 3)) < 0.5, NAMES)
    out = save_calibration(fit, tmp_path / "answers.json")
    doc = load_calibration(out, kind="answers")
    assert doc["kind"] == "answers" and doc["identified"] == fit.identified and doc["counts"] == fit.counts
    assert QSEFWeights.load(out) == fit.weights
    with pytest.raises(ValueError, match="of kind 'answers', expected 'labels'"):
        load_calibration(out, kind="labels")
    assert load_calibration(DEFAULT_CALIBRATION, kind="labels")["kind"] == "labels"  # written before kinds
    before = DEFAULT_CALIBRATION.read_bytes()
    with pytest.raises(ValueError, match="shipped label calibration"):
        save_calibration(fit, DEFAULT_CALIBRATION)
    assert DEFAULT_CALIBRATION.read_bytes() == before


def _toy_answers(monkeypatch, reps=4, seed=0):
    """Toy engine, 5 domain experts; the expert of a text's domain is right, the others right 30% of the time."""
    from qsef_fixtures import CORPORA

    enc = HashEncoder()
    engine = QSEFEngine(make_experts(enc), encoder=enc, weights=QSEFWeights(), kg=install_toy_kg(monkeypatch))
    texts, labels = [], []
    for d, ts in CORPORA.items():
        for r in range(reps):
            texts += [f"{t} case {r}" for t in ts]
            labels += [d] * len(ts)
    texts += QUERIES
    labels += LABELS
    rng = np.random.default_rng(seed)
    domains = [e.domain for e in engine.experts]
    correct = rng.random((len(texts), len(domains))) < 0.3
    correct[np.arange(len(texts)), [domains.index(d) for d in labels]] = True
    return engine, texts, enc.encode(texts), correct, np.array(labels)


def test_answer_features_match_the_engine_and_never_see_a_questions_own_answers(monkeypatch):
    from qsef.calibration import AnswerFeatures, te_matrix
    from qsef.history import AnswerHistory

    engine, texts, emb, correct, labels = _toy_answers(monkeypatch)
    feats = AnswerFeatures(engine, texts, emb, correct, engine.experts, labels=labels)
    train, test = np.arange(0, len(texts), 2), np.arange(1, len(texts), 2)
    got = feats.values(train, test)
    engine.history = AnswerHistory(emb[train], correct[train], [e.name for e in engine.experts])
    res = engine.score([texts[i] for i in test], embeddings=emb[test])
    assert set(got) == set(res.components)
    for name, v in res.components.items():
        np.testing.assert_allclose(got[name], v, rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(te_matrix(got, engine.weights), res.TE, rtol=1e-5)
    # out of fold: a question's own answers never reach its C_model
    flipped = correct.copy()
    flipped[0] = ~flipped[0]
    a = feats.out_of_fold(np.arange(len(texts)), k=4)
    b = AnswerFeatures(engine, texts, emb, flipped, engine.experts, labels=labels).out_of_fold(np.arange(len(texts)), k=4)
    np.testing.assert_array_equal(a.values[0], b.values[0])
    assert not np.array_equal(a.values, b.values)  # ... but they do reach the other folds'


def test_calibrate_answers_cross_validates_against_the_current_weights_and_saves(monkeypatch, tmp_path):
    from qsef.calibration import calibrate_answers

    engine, texts, emb, correct, labels = _toy_answers(monkeypatch)
    out = tmp_path / "cal-answers.json"
    fit = calibrate_answers(engine, texts, emb, correct, engine.experts, k=3, labels=labels, out=out)
    assert fit.kind == "answers" and "c_model" in fit.identified and "d_emb" in fit.identified
    cv = fit.cv
    assert len(cv["nll_folds"]) == 3 and len(cv["coefficients_folds"]) == 3
    assert {"nll", "accuracy", "p_spearman"} <= set(cv["baseline"])
    assert cv["accuracy"] > correct.mean()  # held out, the highest-P expert beats a random pick
    doc = load_calibration(out, kind="answers")
    assert doc["data"]["n"] == len(texts) and doc["data"]["experts"] == [e.name for e in engine.experts]
    with pytest.raises(ValueError, match="too few"):
        calibrate_answers(engine, texts[:5], emb[:5], correct[:5], engine.experts, k=3)
    with pytest.raises(ValueError, match="at least 2"):
        calibrate_answers(engine, texts, emb, correct, engine.experts, k=1)
