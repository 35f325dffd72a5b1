"""Answer-graded compound questions: construction, ready-made rows, part matching and scoring, answering
from cached scores, and one run through the real clause splitter and the real QSEF engine."""

from __future__ import annotations

import json

import pytest
from fakes import DOMAIN_TEXTS, HashEncoder, ScriptedLLM, _tiny_graphs

from router.answers import AnswerRowError
from router.compound_answers import (
    JOINERS,
    AnswerSetup,
    CompoundBuildError,
    CompoundPart,
    CompoundRow,
    PartScore,
    RowScore,
    answer_parts,
    answer_text,
    build_compound_rows,
    coverage,
    evaluate_compound,
    is_compound_file,
    is_self_contained,
    load_compound_rows,
    match_parts,
    options_text,
    overlap,
    render_part,
    score_row,
    summarize,
)
from router.decompose import Decomposer


def _row(q, choices, answer, domain, rid):
    return {"question": q, "choices": choices, "answer": answer, "domain": domain, "id": rid}


ROWS = [
    _row("Which organ pumps blood through the body?", ["The heart", "The liver", "The lungs"], 0, "medicine", "m1"),
    _row("Which of the following is a symptom of influenza?", ["Fever", "Hair growth", "Taller height"], 0,
         "medicine", "m2"),
    _row("Can a landlord keep a tenant's deposit without any reason?", ["Yes, always", "No, not without cause"], 1,
         "law", "l1"),
    _row("Under contract law, a valid contract requires", ["an offer and acceptance", "a notary", "a witness"], 0,
         "law", "l2"),
    _row("Which keyword defines a function in Python?", ["func", "def", "fn", "lambda"], 1, "code", "c1"),
    _row("What does this Python code do?\n\nx = [1, 2]\nprint(len(x))", ["prints 2", "prints 1", "fails"], 0,
         "code", "c2"),
    _row("What is the difference between a stock and a bond?", ["ownership vs debt", "none", "colour"], 0,
         "finance", "f1"),
    _row("Which of these raises a bond's price?", ["falling interest rates", "rising interest rates"], 0,
         "finance", "f2"),
    _row("What is the capital of France?", ["Berlin", "Paris", "Rome"], 1, "general", "g1"),
    _row("Which river flows through Cairo?", ["The Nile", "The Amazon", "The Thames"], 0, "general", "g2"),
]


# -- construction ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("parts", [2, 3, "mixed"])
def test_parts_are_of_different_domains_and_spans_are_exact(parts):
    built = build_compound_rows(ROWS, n=30, parts=parts, seed=3)
    assert len(built) == 30
    sizes = {len(r.parts) for r in built}
    assert sizes == ({2, 3} if parts == "mixed" else {parts})
    for r in built:
        assert len(set(r.domains)) == len(r.parts)  # different domains
        ends = 0
        for p in r.parts:
            s, e = p.span
            assert r.message[s:e] == p.text and s >= ends  # exact, in order, not overlapping
            ends = e
            asked = " ".join(p.question.split())
            assert p.text.lower().startswith(asked.lower())  # the question itself (first letter may be lowered)
            assert p.options_inline == (options_text(p.choices) in p.text)


def test_construction_is_deterministic_by_seed():
    a = [r.to_dict() for r in build_compound_rows(ROWS, n=12, seed=7)]
    b = [r.to_dict() for r in build_compound_rows(ROWS, n=12, seed=7)]
    c = [r.to_dict() for r in build_compound_rows(ROWS, n=12, seed=8)]
    assert a == b and a != c


def test_rows_are_used_before_any_is_reused():
    built = build_compound_rows(ROWS, n=2, parts=2, seed=0)  # 4 parts from 10 rows
    ids = [p.id for r in built for p in r.parts]
    assert len(ids) == len(set(ids))
    # default n: about one use of every row
    assert len(build_compound_rows(ROWS, parts=2, seed=0)) == 5


def test_options_stay_with_a_question_that_needs_them():
    assert is_self_contained("What is the capital of France?")
    assert not is_self_contained("Which of the following is a symptom of influenza?")
    assert not is_self_contained("Under contract law, a valid contract requires")  # no question mark
    assert not is_self_contained("The answer is ___?")
    text, inline = render_part("Which of these raises a bond's price?", ["falling rates.", "rising rates"])
    assert inline and text == "Which of these raises a bond's price? (A) falling rates (B) rising rates"
    text, inline = render_part("What does this code do?\n\nx = 1\nprint(x)", ["prints 1", "fails"])
    assert inline and text == "What does this code do? x = 1 print(x) (A) prints 1 (B) fails"  # one line


def test_refuses_fewer_than_two_domains_and_bad_arguments():
    law = [r for r in ROWS if r["domain"] == "law"]
    with pytest.raises(CompoundBuildError, match=r"at least 2 different domains; the rows have law \(2\)"):
        build_compound_rows(law)
    two = [r for r in ROWS if r["domain"] in ("law", "code")]
    assert {len(r.parts) for r in build_compound_rows(two, n=5, parts="mixed")} == {2}  # mixed: capped
    with pytest.raises(CompoundBuildError, match="at least 3 different domains"):
        build_compound_rows(two, parts=3)
    with pytest.raises(CompoundBuildError, match="parts must be 2, 3 or mixed"):
        build_compound_rows(ROWS, parts=4)
    with pytest.raises(CompoundBuildError, match="n must be at least 1"):
        build_compound_rows(ROWS, n=0)
    long = [*law, _row("Why? " * 100, ["a", "b"], 0, "code", "long")]
    with pytest.raises(CompoundBuildError, match="1 rows left out: a part over 400 characters"):
        build_compound_rows(long)


def test_every_joiner_gives_exact_spans():
    texts = ["Which organ pumps blood?", "What is a tort?", "Under contract law, a contract requires (A) x (B) y"]
    for k, joiners in JOINERS.items():
        for j in joiners:
            msg, written, spans = j.join(texts[:k])
            assert [msg[s:e] for s, e in spans] == written
            assert all(w.lower() == t.lower() for w, t in zip(written, texts, strict=False))


# -- ready-made compound rows ------------------------------------------------------------------------------

def _compound_line(**change):
    row = build_compound_rows(ROWS, n=1, parts=2, seed=1)[0].to_dict()
    row.update(change)
    return row


def _write(tmp_path, objs):
    p = tmp_path / "compound.jsonl"
    p.write_text("\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + "\n", encoding="utf-8")
    return p


def test_ready_made_rows_round_trip(tmp_path):
    built = build_compound_rows(ROWS, n=4, seed=2)
    p = _write(tmp_path, [r.to_dict() for r in built])
    assert is_compound_file(p)
    assert load_compound_rows(p) == built
    plain = _write(tmp_path, [ROWS[0]])
    assert not is_compound_file(plain)


def _bad_part(k, **change):
    row = _compound_line()
    row["parts"][k].update(change)
    return row


@pytest.mark.parametrize(("obj", "rule", "detail"), [
    (_compound_line(message=""), "message", '"message" must be a non-empty string'),
    (_compound_line(parts="x"), "parts", '"parts" must be a list'),
    (_compound_line(parts=[]), "too-few-parts", "has 0"),
    (_bad_part(1, answer=7), "answer-out-of-range", 'parts[1]: "answer" 7 is not in'),
    (_bad_part(0, domain="astrology"), "unknown-domain", "parts[0]:"),
    (_bad_part(1, span=[0]), "span", "parts[1]: \"span\" must be [start, end]"),
    (_bad_part(1, span=[5, 100000]), "span-out-of-range", "parts[1]: span [5, 100000]"),
    (_bad_part(1, span=[0, 10]), "span-overlap", "overlaps parts[0]"),
    (_bad_part(0, text="something else"), "span-text", "parts[0]: \"text\""),
    (_bad_part(0, options_inline="yes"), "options-inline", "parts[0]"),
    ({"question": "x"}, "mixed-rows", 'without "parts"'),
    ("[1, 2]", "not-an-object", "got list"),
    ('{"parts": [', "malformed-json", ""),
])
def test_bad_compound_rows_name_file_line_and_rule(tmp_path, obj, rule, detail):
    p = _write(tmp_path, [_compound_line(), obj])
    with pytest.raises(AnswerRowError) as exc:
        load_compound_rows(p)
    assert (exc.value.line, exc.value.rule) == (2, rule)
    assert str(exc.value).startswith(f"{p}:2: {rule}: ") and detail in str(exc.value)


def test_part_spans_may_come_in_any_order_but_not_empty(tmp_path):
    row = _compound_line()
    row["parts"] = row["parts"][::-1]  # spans out of message order are fine
    assert len(load_compound_rows(_write(tmp_path, [row]))[0].parts) == 2
    with pytest.raises(AnswerRowError, match="empty-file"):
        load_compound_rows(_write(tmp_path, [""]))


# -- matching and scoring ----------------------------------------------------------------------------------

A = "Which organ pumps blood through the body?"
B = "Which keyword defines a function in Python? (A) func (B) def"
C = "What is the capital of France?"


def _compound(*texts, domains=("medicine", "code", "general")):
    msg = " Also, ".join(texts)
    parts, at = [], 0
    for i, (t, d) in enumerate(zip(texts, domains, strict=False)):
        at = msg.index(t, at)
        parts.append(CompoundPart(t, ("x", "y"), 0, d, f"p{i}", t, (at, at + len(t)), False))
        at += len(t)
    return CompoundRow("r", msg, tuple(parts))


def test_match_is_one_to_one_by_overlap():
    m = match_parts([A, B, C], [C, A, B])
    assert [x.subtask for x in m] == [1, 2, 0] and all(x.matched for x in m)
    assert overlap(A, A) == 1.0 and overlap(A, C) == 0.0
    assert overlap("(A) x (B) y", "(C) z") == 0.0  # option letters are not content


def test_a_merged_subtask_leaves_a_part_lost():
    m = match_parts([A, C], [A + " " + C])
    assert sum(x.matched for x in m) == 1
    lost = next(x for x in m if not x.matched)
    assert lost.subtask is None and lost.coverage == 0.0


def test_a_subtask_with_junk_still_matches_but_one_with_little_of_the_part_does_not():
    junk = C + " Berlin Paris Rome Madrid Lisbon Vienna Prague Oslo"
    (m,) = match_parts([C], [junk])
    assert m.matched and m.coverage == coverage(C, junk) == 1.0 and m.overlap < 0.5
    (m,) = match_parts([A], ["Which organ?"], min_coverage=0.5)
    assert not m.matched and m.coverage == pytest.approx(1 / 5) and m.subtask == 0


def test_score_row_routes_matched_parts_and_the_domain_set():
    row = _compound(A, B)
    s = score_row(row, [B, A], ["code", "finance"], hints=["code", "medicine"], routed_alone=["medicine", "code"],
                  path="llm")
    assert [p.subtask for p in s.parts] == [1, 0]
    assert [p.routed for p in s.parts] == ["finance", "code"]
    assert [p.domain_ok for p in s.parts] == [False, True]
    assert s.count_ok and not s.domain_set_ok and s.domain_set_ok_hint
    lost = score_row(row, [A], ["medicine"])
    assert not lost.count_ok and [p.matched for p in lost.parts] == [True, False]
    assert lost.parts[1].routed is None and not lost.parts[1].domain_ok
    assert not lost.domain_set_ok  # {medicine} != {medicine, code}
    with pytest.raises(ValueError, match="2 sub-tasks but 1 dispatched"):
        score_row(row, [A, B], ["medicine"])


def _scored(ok, alone, *, matched=True, domain="law"):
    return PartScore(index=0, domain=domain, subtask=0 if matched else None, overlap=1.0 if matched else 0.0,
                     coverage=1.0 if matched else 0.0, routed=domain if matched else None, routed_alone=domain,
                     expert="big", expert_alone="big" if matched else "small", correct=ok, correct_alone=alone,
                     verbatim=matched)


def test_summarize_counts_lost_parts_wrong():
    rows = [
        RowScore("a", "llm", ["s1", "s2"], ["law", "code"], ["law", "code"],
                 [_scored(True, True), _scored(True, True, domain="code")]),
        RowScore("b", "clause_splitter", ["s1"], ["law"], ["law"],
                 [_scored(True, True), _scored(False, True, matched=False, domain="code")]),
    ]
    out = summarize(rows)
    assert out["n"] == 2 and out["n_parts"] == 4
    assert out["count_accuracy"] == 0.5 and out["part_match_rate"] == 0.75
    assert out["domain_accuracy"] == 0.75 and out["domain_accuracy_alone"] == 1.0
    assert out["domain_set_accuracy"] == 0.5
    a = out["answer_accuracy"]
    assert (a["compound"], a["alone"], a["penalty"], a["n_parts"]) == (0.75, 1.0, 0.25, 4)


def test_answer_text_strips_own_options_and_recognises_the_question():
    q = "Which of the following is a tort?\nPick one."
    part = CompoundPart(q, ("trespass", "a debt."), 0, "law", "x", "", (0, 1), True)
    opts = options_text(part.choices)
    assert opts == "(A) trespass (B) a debt"
    assert answer_text(part, f"which of the following is a tort? Pick one. {opts}.") == (q, True)
    text, same = answer_text(part, f"First, which of the following is a tort? {opts}")
    assert not same and text == "First, which of the following is a tort?"
    assert answer_text(part, "What is a tort? (A) other (B) options") == ("What is a tort? (A) other (B) options",
                                                                          False)


# -- evaluation: decomposition through the decomposer, routing through a (fake-profile) QSEF scorer ----------

def test_evaluate_compound_through_the_llm_path(make_router):
    row = _compound("What dose of ibuprofen is safe for a fever?", "How do I sort a list in Python?",
                    domains=("medicine", "code"))
    good = {"subtasks": [{"subtask": "What dose of ibuprofen is safe for a fever?", "domain": "medicine"},
                         {"subtask": "How do I sort a list in Python?", "domain": "code"}]}
    merged = {"subtasks": [{"subtask": row.message, "domain": "medicine"}]}
    router = make_router(ScriptedLLM([json.dumps(good), json.dumps(merged)]))
    out = evaluate_compound([row, row], decomposer=router.decomposer, scorer=router.scorer, keep_rows=True)
    assert out["n"] == 2 and out["paths"] == {"llm": 1, "repaired": 1}  # the merged one is split by repair
    r0, r1 = out["rows"]
    assert r0["count_ok"] and all(p["matched"] for p in r0["parts"])
    assert r0["routed"] == ["medicine", "code"] and r0["domain_set_ok"]
    assert r1["count_ok"] and "split merged" in r1["reason"]
    assert out["by_path"]["llm"]["n"] == 1 and out["by_parts"]["2"]["n"] == 2
    assert out["domain_accuracy_alone"] == 1.0 and out["answers"] is None and "answer_accuracy" not in out
    assert out["per_domain"]["medicine"]["n_parts"] == 2


# -- answering: every score comes from a prefilled cache, so no model is loaded ------------------------------

def _answer_fleet(tmp_path):
    from core.settings import Settings
    from experts.answers import PromptFormat
    from experts.registry import ExpertRegistry, ExpertSpec

    settings = Settings(home=tmp_path)
    _tiny_graphs(settings)
    reg = ExpertRegistry(tmp_path / "fleet.sqlite")
    texts = [t for ts in DOMAIN_TEXTS.values() for t in ts]
    for name, size, cost in (("right", 1_500_000_000, 10.0), ("wrong", 100_000_000, 1.0)):
        reg.add(ExpertSpec(name=name, domain="general", backend="hf", backend_kwargs={"model": name},
                           profile={"texts": texts}, size_params=size, cost=cost))
    fmt = PromptFormat("letter", False)
    return AnswerSetup(formats={"right": fmt, "wrong": fmt}, registry=reg, settings=settings, cv=2,
                       encoder=HashEncoder(), cache_dir=tmp_path / "cache")


def _prefill(setup, questions):
    """``right`` scores the gold choice highest, ``wrong`` the next one."""
    from experts.answers import AnswerScorer

    for name in ("right", "wrong"):
        sc = AnswerScorer(name, settings=setup.settings, cache_dir=setup.cache_dir)
        with sc.cache_file(setup.formats[name]).open("a", encoding="utf-8") as fh:
            for q in questions:
                best = q.answer if name == "right" else (q.answer + 1) % len(q.choices)
                fh.write(json.dumps({"q": q.key, "scores": [0.0 if i == best else -5.0
                                                            for i in range(len(q.choices))]}) + "\n")


def test_answering_compound_parts_against_the_same_parts_alone(tmp_path):
    from experts.answers import MCQuestion

    setup = _answer_fleet(tmp_path)
    rows = build_compound_rows(ROWS, n=4, parts=2, seed=5)
    scores = []
    for r in rows:  # part 0 decomposed faithfully, part 1 with a lead word left on, in row 3 part 1 lost
        p0, p1 = r.parts
        subs = [p0.text, "Please tell me: " + p1.text] if r is not rows[3] else [p0.text]
        scores.append(score_row(r, subs, ["general"] * len(subs)))
    changed = [MCQuestion(answer_text(p1, s.subtasks[1])[0], p1.choices, p1.answer, p1.domain)
               for r, s in zip(rows[:3], scores[:3], strict=True) for p1 in [r.parts[1]]]
    _prefill(setup, [p.question_alone() for r in rows for p in r.parts] + changed)
    info = answer_parts(scores, rows, setup)
    assert info["errors"] == {} and info["cv_folds"] == 2
    assert info["n_questions"] == len({p.id for r in rows for p in r.parts})  # a row reused is scored once
    parts = [p for s in scores for p in s.parts]
    for p in parts:
        assert p.correct_alone == (p.expert_alone == "right")
        if p.matched:
            assert p.correct == (p.expert == "right") and not p.unscored
    assert [p.verbatim for s in scores[:3] for p in s.parts] == [True, False] * 3
    lost = scores[3].parts[1]
    assert not lost.matched and lost.correct is False and lost.expert is None
    out = summarize(scores)["answer_accuracy"]
    assert out["n_parts"] == 8 and out["penalty"] == pytest.approx(out["alone"] - out["compound"], abs=1e-4)
    assert sum(info["share"]["alone"].values()) == 8 and sum(info["share"]["compound"].values()) == 7


def test_an_unscorable_compound_answer_is_counted_wrong_and_reported(tmp_path):
    setup = _answer_fleet(tmp_path)
    rows = build_compound_rows(ROWS, n=2, parts=2, seed=5)
    scores = [score_row(r, [r.parts[0].text, "Now: " + r.parts[1].text], ["general"] * 2) for r in rows]
    _prefill(setup, [p.question_alone() for r in rows for p in r.parts])  # the changed texts are not cached
    info = answer_parts(scores, rows, setup)
    assert "cv_folds" not in info and "without answer history" in info["note"]  # 4 questions, one per domain
    changed = [s.parts[1] for s in scores]
    assert all(p.correct is False and "could not be loaded" in p.unscored for p in changed)
    assert set(info["errors"]) <= {"right", "wrong"} and info["errors"]
    assert summarize(scores)["answer_accuracy"]["unscored"] == 2


# -- the real decomposer (clause splitter) and the real QSEF engine ------------------------------------------

@pytest.mark.slow
def test_end_to_end_with_the_clause_splitter_and_the_real_engine(tmp_path):
    from core.settings import Settings
    from router.llm import make_router_llm
    from router.pipeline import Router

    clear = [r for r in ROWS if r["id"] in ("m1", "l1", "c1", "f1", "g1")]  # self-contained, one per domain
    rows = build_compound_rows(clear, n=6, parts=2, seed=0)
    router = Router.from_settings(Settings(), llm=make_router_llm("none"), registry_path=tmp_path / "e.sqlite",
                                  feedback_path=tmp_path / "f.sqlite")
    try:
        assert isinstance(router.decomposer, Decomposer)
        out = evaluate_compound(rows, decomposer=router.decomposer, scorer=router.scorer, keep_rows=True)
    finally:
        router.close()
    assert out["paths"] == {"clear_split": 6} and out["llm"].startswith("none")
    # two plain questions joined as people do: the splitter finds both clearly (no LLM is needed), and
    # QSEF routes each alone right
    assert out["count_accuracy"] == 1.0 and out["part_match_rate"] == 1.0
    assert out["domain_accuracy_alone"] == 1.0
    for r in out["rows"]:
        for p in r["parts"]:
            assert p["domain_ok"] == (r["routed"][p["subtask"]] == p["domain"])
    assert out["domain_set_accuracy"] == pytest.approx(
        sum(r["domain_set_ok"] for r in out["rows"]) / 6, abs=1e-4)
