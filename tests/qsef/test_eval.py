"""Routing evaluation: every method runs through the same CV driver; qsef learns from folds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qsef_fixtures import CORPORA, LABELS, QUERIES, HashEncoder, install_toy_kg, make_experts

from core.settings import Settings
from qsef.engine import QSEFEngine, QSEFWeights
from qsef.eval.routing import evaluate, load_rows, report, routing_method_resolver


@pytest.fixture
def engine(monkeypatch):
    enc = HashEncoder()
    return QSEFEngine(make_experts(enc), encoder=enc, weights=QSEFWeights(), kg=install_toy_kg(monkeypatch))


def _rows():
    rows = [{"text": t, "domain": d} for d, ts in CORPORA.items() for t in ts]
    rows += [{"text": q, "domain": d} for q, d in zip(QUERIES, LABELS, strict=True)]
    return rows * 2


@pytest.mark.parametrize("method", ["qsef", "centroid", "knn", "zeroshot", "random"])
def test_every_method_cross_validates(engine, method):
    out = evaluate(_rows(), method=method, engine=engine, cv=2)
    assert out["n"] == 40 and 0 <= out["accuracy"] <= 1 and set(out["per_domain"]) == set(LABELS)
    if method in ("qsef", "centroid", "knn"):
        assert out["accuracy"] > 0.5


def test_qsef_ablation_and_no_training(engine):
    out = evaluate(_rows(), method="qsef", engine=engine, cv=2, ablate=["d_emb", "d_kg"])
    assert out["ablate"] == ["d_emb", "d_kg"]
    plain = evaluate([{"text": q, "domain": d} for q, d in zip(QUERIES, LABELS, strict=True)],
                     method="qsef", engine=engine)
    assert plain["accuracy"] == 1.0
    with pytest.raises(ValueError, match="learns from labelled rows"):
        evaluate(_rows(), method="centroid", engine=engine)
    with pytest.raises(ValueError, match="choose one of"):
        evaluate(_rows(), method="oracle", engine=engine, cv=2)


def test_report_and_loader(tmp_path):
    r = report(np.array(["a", "a", "b"]), np.array(["a", "b", "b"]))
    assert r["accuracy"] == pytest.approx(2 / 3) and r["per_domain"] == {"a": 0.5, "b": 1.0}
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"text": "t", "domain": "law"}) + "\n\n")
    assert load_rows(f) == [{"text": "t", "domain": "law"}]
    f.write_text('{"text": 1}\n')
    with pytest.raises(ValueError, match=":1:"):
        load_rows(f)
    assert set(routing_method_resolver.names) == {"qsef", "centroid", "knn", "zeroshot", "llm", "random"}


def test_confusion_png(engine, tmp_path):
    out = evaluate(_rows(), method="centroid", engine=engine, cv=2, confusion=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000 and out["confusion_png"].endswith("c.png")


@pytest.mark.slow
def test_llm_routing_batched_scores_equal_one_prompt_at_a_time():
    """Left-padded batches must give each prompt the label log-likelihoods it gets alone (real SmolLM2)."""
    from qsef.eval.routing import LLMRouting

    texts = ["What is the statute of limitations for fraud?", "Sort a list in Python",
             "Which drug lowers blood pressure quickly in an emergency room setting for adults?"]
    batched = LLMRouting(model="smollm2-135m", batch_size=3, settings=Settings())
    single = LLMRouting(model="smollm2-135m", batch_size=1, settings=Settings())
    a = batched.label_scores(texts)
    single._lm, single.tok = batched._lm, batched.tok  # same weights, no second load
    b = single.label_scores(texts)
    assert a.shape == (3, 5) and np.all(np.isfinite(a)) and np.all(a < 0)
    np.testing.assert_allclose(a, b, atol=2e-3)
