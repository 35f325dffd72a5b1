"""Answer-grading rows, routing arithmetic (oracle, random, PGR/APGR) and the `qsef eval answers` errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from router.answer_routing import (
    apgr,
    bootstrap_apgr,
    choose,
    folds,
    mcnemar_exact,
    oracle,
    outcome,
    pgr,
    qsef_choice,
    random_outcome,
)
from router.answers import AnswerRowError, load_answer_rows

GOOD = {"question": "What is 2 + 2?", "choices": ["3", "4"], "answer": 1, "domain": "general"}


def _write(tmp_path, lines):
    p = tmp_path / "rows.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize(("row", "rule"), [
    ({**GOOD, "choices": []}, "no-choices"),
    ({k: v for k, v in GOOD.items() if k != "choices"}, "no-choices"),
    ({**GOOD, "choices": ["only"]}, "too-few-choices"),
    ({**GOOD, "answer": 2}, "answer-out-of-range"),
    ({**GOOD, "answer": -1}, "answer-out-of-range"),
    ({**GOOD, "answer": "1"}, "answer-not-int"),
    ({**GOOD, "domain": "astrology"}, "unknown-domain"),
    ({**GOOD, "question": ""}, "question"),
    ({**GOOD, "choices": ["a", 3]}, "choice-not-string"),
])
def test_bad_rows_name_file_line_and_rule(tmp_path, row, rule):
    p = _write(tmp_path, [json.dumps(GOOD), json.dumps(row)])
    with pytest.raises(AnswerRowError) as exc:
        load_answer_rows(p)
    assert exc.value.line == 2 and exc.value.rule == rule
    assert str(exc.value).startswith(f"{p}:2: {rule}:")


def test_malformed_json_and_empty_file(tmp_path):
    p = _write(tmp_path, [json.dumps(GOOD), "", '{"question": "x", "choices": ['])
    with pytest.raises(AnswerRowError, match=r"rows.jsonl:3: malformed-json"):
        load_answer_rows(p)
    with pytest.raises(AnswerRowError, match="empty-file"):
        load_answer_rows(_write(tmp_path, [""]))


def test_good_rows_load_with_ids(tmp_path):
    rows = load_answer_rows(_write(tmp_path, [json.dumps(GOOD), json.dumps({**GOOD, "id": "q7"})]))
    assert [r["id"] for r in rows] == ["rows.jsonl:1", "q7"] and rows[0]["answer"] == 1


def test_cli_bad_row_exits_nonzero_naming_line(tmp_path, capsys):
    from api.cli import main

    p = _write(tmp_path, [json.dumps(GOOD), json.dumps({**GOOD, "answer": 5})])
    assert main(["eval", "answers", str(p), "--json"]) == 2
    err = capsys.readouterr().err
    assert f"{p}:2: answer-out-of-range" in err


def test_oracle_random_and_outcome_arithmetic():
    correct = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]], dtype=bool)  # experts: strong .. cheap
    costs = np.array([10.0, 3.0, 1.0])
    orc = oracle(correct, costs)
    assert orc.tolist() == [1, 2, 2, 0]  # cheapest correct; cheapest when nobody is right
    o = outcome(correct, costs, orc)
    assert o.accuracy == pytest.approx(0.75) and o.mean_cost == pytest.approx((3 + 1 + 1 + 10) / 4)
    r = random_outcome(correct, costs)
    assert r.accuracy == pytest.approx(correct.mean()) and r.mean_cost == pytest.approx(costs.mean())
    assert outcome(correct, costs, np.zeros(4, dtype=int)).share == [1.0, 0.0, 0.0]


def test_pgr_and_apgr():
    assert pgr(0.5, 0.3, 0.7) == pytest.approx(0.5)
    weak, strong = (1.0, 0.3), (11.0, 0.7)
    # the strong expert itself only at full cost: the step reaches PGR 1 at x = 1 -> area 0
    assert apgr([strong], weak=weak, strong=strong) == pytest.approx(0.0, abs=2e-3)
    # a router with the strong accuracy at half the normalised cost: area 0.5
    assert apgr([(6.0, 0.7)], weak=weak, strong=strong) == pytest.approx(0.5, abs=2e-3)
    # PGR 0.5 from cost 0 on, then 1.0 from x = 0.5: 0.5 * 0.5 + 1.0 * 0.5
    assert apgr([(1.0, 0.5), (6.0, 0.7)], weak=weak, strong=strong) == pytest.approx(0.75, abs=2e-3)


def test_mcnemar_exact_counts_only_the_discordant_questions():
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    b = np.array([1, 1, 0, 0, 0, 0, 0, 1], dtype=bool)
    out = mcnemar_exact(a, b)
    assert (out["a_only_right"], out["b_only_right"]) == (4, 1)
    assert out["accuracy_difference"] == pytest.approx(0.375)
    assert out["p_value"] == pytest.approx(12 / 32)  # two-sided binomial: P(<=1 or >=4 of 5)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_bootstrap_apgr_brackets_the_point_estimate():
    rng = np.random.default_rng(3)
    n = 200
    strong = rng.random(n) < 0.7
    weak = rng.random(n) < 0.3
    correct = np.stack([strong, weak], axis=1)
    costs = np.array([10.0, 1.0])
    sweep = [np.zeros(n, dtype=int), np.where(np.arange(n) % 2 == 0, 0, 1), np.ones(n, dtype=int)]
    out = bootstrap_apgr(correct, costs, sweep, weak_j=1, strong_j=0, n_boot=200)
    pts = [(float(costs[c].mean()), float(correct[np.arange(n), c].mean())) for c in sweep]
    acc = correct.mean(0)
    assert out["apgr"] == pytest.approx(apgr(pts, weak=(1.0, acc[1]), strong=(10.0, acc[0])))
    assert out["ci95_low"] <= out["apgr"] <= out["ci95_high"] and out["n_boot"] == 200


def test_strategies():
    te = np.array([[0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    p = te / te.sum(1, keepdims=True)
    costs = np.array([10.0, 3.0, 1.0])
    assert qsef_choice(te, p, costs, "argmax").tolist() == [0, 2]
    assert qsef_choice(te, p, costs, "cost_aware", lam=0.0).tolist() == [0, 2]
    assert qsef_choice(te, p, costs, "cost_aware", lam=1.0).tolist() == [1, 2]  # 0.5-1 < 0.4-0.3
    # the cheapest expert with P >= tau, else argmax
    assert qsef_choice(te, p, costs, "threshold", tau=0.35).tolist() == [1, 2]
    assert qsef_choice(te, p, costs, "threshold", tau=0.9).tolist() == [0, 2]
    assert choose(np.array([[0.9, 0.85]]), np.array([2.0, 1.0]), 0.2).tolist() == [1]
    with pytest.raises(ValueError, match="unknown strategy"):
        qsef_choice(te, p, costs, "nope")


def test_folds_are_a_stratified_partition():
    labels = ["a"] * 10 + ["b"] * 7
    fs = folds(labels, 5)
    allidx = np.sort(np.concatenate(fs))
    assert allidx.tolist() == list(range(17))
    assert all(sum(labels[i] == "a" for i in f) >= 2 for f in fs)


# three easy questions in three domains, for the CLI tests that load real models
THREE_ROWS = [
    {"question": "What is the capital of France?", "choices": ["Berlin", "Paris", "Rome"], "answer": 1,
     "domain": "general"},
    {"question": "Which organ pumps blood?", "choices": ["The heart", "The liver"], "answer": 0, "domain": "medicine"},
    {"question": "Which keyword defines a function in Python?", "choices": ["func", "def", "fn", "lambda"],
     "answer": 1, "domain": "code"},
]


@pytest.mark.slow
def test_cli_reports_a_model_that_fails_to_load_and_scores_the_others(tmp_path, capsys):
    from api.cli import main
    from experts.registry import ExpertRegistry, ExpertSpec, capability_fleet

    reg = ExpertRegistry(tmp_path / "fleet.sqlite")
    reg.add(next(s for s in capability_fleet() if s.name == "smollm2-135m"))
    reg.add(ExpertSpec(name="no-such-model", domain="general", backend_kwargs={"model": "no-such-model"}))
    p = _write(tmp_path, [json.dumps(r) for r in THREE_ROWS])
    rc = main(["eval", "answers", str(p), "--json", "--registry", str(tmp_path / "fleet.sqlite"),
               "--experts", "smollm2-135m,no-such-model", "--format", "letter-chat", "--cv", "2"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert rc == 0
    assert "no-such-model" in out["errors"] and "no-such-model" in captured.err
    assert set(out["experts"]) == {"smollm2-135m"} and out["n"] == 3


@pytest.mark.slow
def test_cli_scores_registered_peft_experts_enabled_or_not_and_reports_a_broken_one(tmp_path, capsys, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from api.cli import main
    from core.settings import Settings
    from core.store import ModelStore
    from experts.registry import ExpertRegistry, ExpertSpec, capability_fleet

    base = AutoModelForCausalLM.from_pretrained(ModelStore(Settings()).ensure("smollm2-135m"), dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(
        tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_bytes((tmp_path / "good" / "adapter_config.json").read_bytes())
    (tmp_path / "bad" / "adapter_model.safetensors").write_bytes(b"garbage")
    reg = ExpertRegistry(tmp_path / "fleet.sqlite")
    reg.add(next(s for s in capability_fleet() if s.name == "smollm2-135m"))
    for name in ("good", "bad"):
        reg.add(ExpertSpec(name=f"{name}-lora", domain="general", backend="peft", enabled=False,
                           backend_kwargs={"adapter": str(tmp_path / name), "base": "smollm2-135m"}))
    p = _write(tmp_path, [json.dumps(r) for r in THREE_ROWS])
    home = tmp_path / "home"  # the answer caches of these throwaway adapters stay in tmp_path
    (home / "models").mkdir(parents=True)
    (home / "models" / "smollm2-135m").symlink_to(Settings().path("models", "smollm2-135m"))
    monkeypatch.setenv("QSEF_HOME", str(home))
    rc = main(["eval", "answers", str(p), "--json", "--registry", str(tmp_path / "fleet.sqlite"),
               "--experts", "smollm2-135m,good-lora,bad-lora", "--format", "letter-raw", "--cv", "2"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert rc == 0
    assert "bad-lora" in out["errors"] and str(tmp_path / "bad") in out["errors"]["bad-lora"]
    assert set(out["experts"]) == {"smollm2-135m", "good-lora"} and out["n"] == 3


# -- qsef eval answers --compound --------------------------------------------------------------------------

COMPOUND_ROWS = [
    {"question": "Which organ pumps blood through the body?", "choices": ["The heart", "The liver"], "answer": 0,
     "domain": "medicine"},
    {"question": "Which keyword defines a function in Python?", "choices": ["func", "def", "fn"], "answer": 1,
     "domain": "code"},
    {"question": "What is the capital of France?", "choices": ["Berlin", "Paris", "Rome"], "answer": 1,
     "domain": "general"},
    {"question": "Can a landlord keep a tenant's deposit without any reason?", "choices": ["Yes", "No"], "answer": 1,
     "domain": "law"},
]


def test_cli_compound_bad_inputs_exit_2_naming_the_problem(tmp_path, capsys):
    from api.cli import main
    from router.compound_answers import build_compound_rows

    bad = _write(tmp_path, [json.dumps(COMPOUND_ROWS[0]), json.dumps({**GOOD, "answer": 5})])
    assert main(["eval", "answers", str(bad), "--compound", "--no-answers"]) == 2
    assert f"{bad}:2: answer-out-of-range" in capsys.readouterr().err

    one = _write(tmp_path, [json.dumps(GOOD), json.dumps({**GOOD, "question": "What is 3 + 3?"})])
    assert main(["eval", "answers", str(one), "--compound", "--no-answers"]) == 2
    assert "at least 2 different domains; the rows have general (2)" in capsys.readouterr().err

    assert main(["eval", "answers", str(one), "--compound", "--no-answers", "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err

    row = build_compound_rows(COMPOUND_ROWS, n=1, seed=0)[0].to_dict()
    row["parts"][1]["answer"] = 9
    ready = _write(tmp_path, [json.dumps(row)])
    assert main(["eval", "answers", str(ready), "--compound", "--no-answers"]) == 2
    assert f"{ready}:1: answer-out-of-range: parts[1]:" in capsys.readouterr().err

    assert main(["eval", "answers", str(ready), "--json"]) == 2  # compound rows without --compound
    assert "holds compound rows" in capsys.readouterr().err
    assert main(["eval", "answers", str(tmp_path / "missing.jsonl"), "--compound"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_compound_decomposition_and_routing_only(tmp_path, capsys):
    """The clause splitter and the real QSEF engine of the configured router; no expert model is loaded."""
    from api.cli import main

    p = _write(tmp_path, [json.dumps(r) for r in COMPOUND_ROWS])
    rc = main(["eval", "answers", str(p), "--compound", "--no-answers", "--splitter", "--parts", "2", "--n", "3",
               "--seed", "1", "--json", "--rows"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n"] == 3 and out["n_parts"] == 6
    assert out["answers"] is None and "answer_accuracy" not in out
    assert sum(out["paths"].values()) == 3 and set(out["paths"]) <= {"clear_split", "clause_splitter"}
    assert set(out["by_parts"]) == {"2"}
    assert [len(r["parts"]) for r in out["rows"]] == [2, 2, 2]
    for key in ("count_accuracy", "part_match_rate", "domain_accuracy", "domain_accuracy_alone",
                "domain_set_accuracy", "domain_set_accuracy_hint"):
        assert 0.0 <= out[key] <= 1.0


def test_cached_rows_keeps_questions_every_expert_has_scored(tmp_path):
    from core.settings import Settings
    from experts.answers import AnswerScorer, PromptFormat
    from router.answers import cached_rows, to_questions

    settings = Settings(home=tmp_path)
    rows = [{**GOOD, "question": f"What is {i} + {i}?", "id": f"q{i}"} for i in range(3)]
    keys = [q.key for q in to_questions(rows)]
    fmt = PromptFormat("letter", False)
    for name, scored in (("a", keys[:2]), ("b", keys[1:])):
        with AnswerScorer(name, settings=settings).cache_file(fmt).open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"q": k, "scores": [0.0, -1.0]}) + "\n" for k in scored)
    assert [r["id"] for r in cached_rows(rows, {"a": fmt, "b": fmt}, settings=settings)] == ["q1"]
    assert [r["id"] for r in cached_rows(rows, {"a": fmt}, settings=settings)] == ["q0", "q1"]
    assert cached_rows(rows, {}, settings=settings) == []


# -- qsef calibrate --answers, and the refitted QSEF configuration -------------------------------------------

def _cached_fleet(tmp_path, monkeypatch, rows, *, uncached=()):
    """Two experts of one domain, every score from a prefilled cache (no model is loaded): ``big`` is always
    right, ``small`` on every third question; questions in ``uncached`` have no score from ``small``."""
    from fakes import DOMAIN_TEXTS, HashEncoder, _tiny_graphs

    import qsef.encoder
    from core.settings import Settings
    from experts.answers import AnswerScorer, PromptFormat
    from experts.registry import ExpertRegistry, ExpertSpec
    from router.answers import to_questions

    monkeypatch.setenv("QSEF_HOME", str(tmp_path))
    enc = HashEncoder()
    monkeypatch.setattr(qsef.encoder, "get_encoder", lambda settings, name=None: enc)
    settings = Settings()
    _tiny_graphs(settings)
    reg = ExpertRegistry(tmp_path / "fleet.sqlite")
    texts = [t for ts in DOMAIN_TEXTS.values() for t in ts]
    for name, size, cost in (("big", 1_500_000_000, 10.0), ("small", 100_000_000, 1.0)):
        reg.add(ExpertSpec(name=name, domain="general", backend="hf", backend_kwargs={"model": name},
                           profile={"texts": texts}, size_params=size, cost=cost))
    fmt = PromptFormat("letter", False)
    for name in ("big", "small"):
        with AnswerScorer(name, settings=settings).cache_file(fmt).open("w", encoding="utf-8") as fh:
            for i, (r, q) in enumerate(zip(rows, to_questions(rows), strict=True)):
                if name == "small" and r["id"] in uncached:
                    continue
                best = q.answer if name == "big" or i % 3 == 0 else (q.answer + 1) % len(q.choices)
                fh.write(json.dumps({"q": q.key, "scores": [0.0 if k == best else -5.0
                                                            for k in range(len(q.choices))]}) + "\n")
    return settings, reg, {"big": fmt, "small": fmt}


def _answer_rows(n=12):
    doms = ["medicine", "law", "code", "general"]
    return [{**GOOD, "question": f"Question {i} about {doms[i % 4]}: what is {i} + {i}?", "choices": ["1", "2", "3"],
             "answer": i % 3, "domain": doms[i % 4], "id": f"q{i}"} for i in range(n)]


def test_cli_calibrate_answers_bad_input_exits_2_naming_the_problem(tmp_path, capsys):
    from api.cli import main

    p = _write(tmp_path, [json.dumps(GOOD), json.dumps({**GOOD, "choices": ["only"]})])
    assert main(["calibrate", "--answers", str(p)]) == 2
    assert f"{p}:2: too-few-choices" in capsys.readouterr().err
    assert main(["calibrate", "--answers", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["calibrate"]) == 2
    assert "either FILE.jsonl" in capsys.readouterr().err
    assert main(["calibrate", str(p), "--answers", str(p)]) == 2


def test_cli_calibrate_answers_reports_uncached_questions_and_writes_an_answers_calibration(
        tmp_path, monkeypatch, capsys):
    from api.cli import main
    from qsef.calibration import load_calibration
    from qsef.engine import QSEFWeights

    rows = _answer_rows(13)
    _cached_fleet(tmp_path, monkeypatch, rows, uncached={"q5"})
    p = _write(tmp_path, [json.dumps(r) for r in rows])
    out = tmp_path / "cal.json"
    argv = ["calibrate", "--answers", str(p), "--registry", str(tmp_path / "fleet.sqlite"), "--format", "letter-raw",
            "--folds", "2", "--json"]
    assert main([*argv, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert res["n"] == 12 and res["n_uncached"] == 1 and res["uncached_ids"] == ["q5"]
    assert "1 of 13 questions left out" in captured.err and "q5" in captured.err
    assert res["kind"] == "answers" and res["identified"] == ["c_model"]  # one domain: only C_model differs
    assert res["expert_accuracy"] == {"big": 1.0, "small": pytest.approx(5 / 12)}  # q0, q3, q6, q9, q12
    assert set(res["cv_current_weights"]) == {"nll", "accuracy", "p_spearman"}
    assert load_calibration(out, kind="answers")["data"]["n_uncached"] == 1
    assert QSEFWeights.load(out).k2 > 0
    # the default file is not the one the engine loads
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["file"] == str(tmp_path / "calibration-answers.json")
    assert not (tmp_path / "calibration.json").exists()
    # too few cached questions to cross-validate: exit 2, saying how many there are
    assert main([*argv[:-3], "--folds", "7", "--json"]) == 2
    assert "12 of 13 questions have cached answers" in capsys.readouterr().err
    # --format auto with no cached dev-set choice: an error, not a reason to load the models
    assert main([*argv[:5], "--folds", "2"]) == 2
    assert "no cached prompt-format choice" in capsys.readouterr().err


def test_evaluate_answers_reports_the_refit_next_to_the_current_weights(tmp_path, monkeypatch):
    from router.answers import evaluate_answers

    rows = _answer_rows(16)
    settings, reg, formats = _cached_fleet(tmp_path, monkeypatch, rows)
    out = evaluate_answers(rows, formats, settings=settings, registry=reg, cv=2, cached_only=True)
    assert out["n"] == 16 and {"routed", "strategies", "apgr", "spearman", "sweeps"} <= set(out)
    configs = out["qsef_configs"]
    assert set(configs) == {"qsef", "qsef_refit"}
    assert configs["qsef"]["strategies"]["argmax"] == out["strategies"]["qsef_argmax"]
    for block in configs.values():
        assert set(block["strategies"]) == set(block["spearman"]) == {"argmax", "cost_aware", "threshold"}
        assert set(block["apgr"]) == set(block["apgr_fine_grid"]) == {"cost_aware", "threshold"}
    assert {"qsef_refit_cost_aware", "qsef_refit_threshold"} <= set(out["sweeps"]) & set(out["apgr_by_router"])
    sig = out["significance"]
    assert sig["routed_vs_strongest"]["expert"] == out["strongest"]
    assert {"a_only_right", "b_only_right", "p_value"} <= set(sig["routed_vs_strongest"])
    boot = sig["apgr_bootstrap"]["qsef_cost_aware"]
    assert boot["apgr"] == pytest.approx(out["apgr"], nan_ok=True)
    refit = out["qsef_refit"]
    assert refit["identified"] == ["c_model"] and len(refit["coefficients_folds"]) == 2
    assert configs["qsef_refit"]["strategies"]["argmax"]["accuracy"] == 1.0  # big is always right: C_model finds it
    assert "qsef_refit" not in evaluate_answers(rows, formats, settings=settings, registry=reg, cv=2,
                                                cached_only=True, refit=False)
