"""``qsef score`` / ``qsef eval routing`` / ``qsef calibrate`` through the real parser, with toy experts."""

from __future__ import annotations

import argparse
import json

import pytest
from qsef_fixtures import LABELS, QUERIES, HashEncoder, install_toy_kg, make_experts

import qsef.engine
from api.commands import score as score_cmd


@pytest.fixture
def toy_engine(monkeypatch):
    kg = install_toy_kg(monkeypatch)
    enc = HashEncoder()
    experts = make_experts(enc)
    real = qsef.engine.QSEFEngine

    def factory(*args, **kwargs):
        kwargs.setdefault("weights", qsef.engine.QSEFWeights())
        if kwargs["weights"] is None:
            kwargs["weights"] = qsef.engine.QSEFWeights()
        return real(experts, encoder=enc, kg=kg, **{k: v for k, v in kwargs.items() if k not in ("experts",)})

    monkeypatch.setattr(qsef.engine, "QSEFEngine", factory)
    return factory


def _run(argv):
    from api.cli import main

    return main(argv)


def test_score_json(toy_engine, capsys):
    assert _run(["score", QUERIES[1], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["experts"][0]["expert"] == "law"
    assert {"D_emb", "D_kg", "C_data", "C_model", "C_sparsity", "R", "TE", "P", "rank"} <= set(out["experts"][0])
    assert sum(e["P"] for e in out["experts"]) == pytest.approx(1.0)


def test_score_table(toy_engine, capsys):
    assert _run(["score", QUERIES[0], "--ablate", "d_kg"]) == 0
    out = capsys.readouterr().out
    assert "medicine" in out.splitlines()[1] and "TE" in out.splitlines()[0]


def test_eval_routing_and_calibrate(toy_engine, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("QSEF_HOME", str(tmp_path))
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps({"text": q, "domain": d}) + "\n" for q, d in zip(QUERIES, LABELS, strict=True)))
    assert _run(["eval", "routing", str(f), "--json", "--history", "none"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 5 and out["accuracy"] == 1.0 and set(out["per_domain"]) == set(LABELS)
    assert _run(["calibrate", str(f), "--folds", "2", "--json"]) == 0
    assert (tmp_path / "calibration.json").is_file()


def test_eval_group_is_extensible():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    score_cmd.register(sub)
    score_cmd.eval_subparsers(sub).add_parser("decompose").set_defaults(handler=lambda a: 0)
    assert score_cmd.eval_subparsers(sub) is score_cmd.eval_subparsers(sub)  # one group per parser
    assert parser.parse_args(["eval", "decompose"]).eval_command == "decompose"


def test_eval_routing_history_follows_the_router(toy_engine, tmp_path, monkeypatch):
    """``--history route`` (the default) is the router's chain: feedback store first, the seed history only
    when the router's setting has it on — so `qsef eval routing` measures what `qsef route` does."""
    from core.settings import Settings
    from router.feedback import FeedbackStore

    monkeypatch.setenv("QSEF_HOME", str(tmp_path))
    monkeypatch.setenv("QSEF_ROUTER_SEED_HISTORY", "0")
    args = argparse.Namespace(settings=Settings(), history="route")
    assert score_cmd._engine(args).history is None  # no feedback yet, seed off: corpus signals only
    FeedbackStore(args.settings.path("router") / "feedback.sqlite")
    assert isinstance(score_cmd._engine(args).history, FeedbackStore)
    args.history = "none"
    assert score_cmd._engine(args).history is None
    parser = argparse.ArgumentParser()
    score_cmd.register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["eval", "routing", "f.jsonl"]).history == "route"
    assert parser.parse_args(["score", "some text"]).history == "route"  # `qsef score` shows what route ranks
