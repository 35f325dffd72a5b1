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
