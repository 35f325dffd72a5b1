import json
from functools import partial

import pytest
from fakes import ScriptedLLM

from router.decompose import Decomposer, DecompositionError, decomposition_schema, is_clear_split

DOMAINS = ["medicine", "law", "code", "finance", "general"]
Q = "What dose of ibuprofen is safe for a fever, and how do I deduct medical costs on my taxes?"
GOOD = {"subtasks": [{"subtask": "What dose of ibuprofen is safe for a fever?", "domain": "medicine"},
                     {"subtask": "How do I deduct medical costs on my taxes?", "domain": "finance"}]}


# These tests exercise the LLM's path: the clear-split shortcut would answer Q without asking it.
llm_decomposer = partial(Decomposer, clear_split=False)


def test_schema_enumerates_domains():
    s = decomposition_schema(DOMAINS)
    assert s["properties"]["subtasks"]["items"]["properties"]["domain"]["enum"] == DOMAINS


def test_valid_llm_output_is_llm_path():
    d = llm_decomposer(ScriptedLLM([json.dumps(GOOD)]), DOMAINS).decompose(Q)
    assert d.path == "llm" and not d.flagged
    assert [s.domain_hint for s in d.subtasks] == ["medicine", "finance"]


def test_fast_path_skips_llm():
    llm = ScriptedLLM([json.dumps(GOOD)])
    d = llm_decomposer(llm, DOMAINS).decompose("What is a tort?")
    assert d.path == "fast_path" and llm.calls == 0 and d.subtasks[0].domain_hint == "law"


@pytest.mark.parametrize("raw", [
    "Sure! Here you go:\n" + json.dumps(GOOD) + "\nHope it helps.",          # chatter around JSON
    json.dumps(GOOD)[:-3],                                                    # truncated tail
    "```json\n" + json.dumps(GOOD) + "\n```",                                 # code fence
    json.dumps({"subtasks": [{"subtask": GOOD["subtasks"][0]["subtask"], "domain": "Health"},
                             {"subtask": GOOD["subtasks"][1]["subtask"], "domain": "finance"}]}),  # unknown domain
    json.dumps(GOOD["subtasks"]),                                             # bare list
])
def test_repairable_outputs(raw):
    d = llm_decomposer(ScriptedLLM([raw]), DOMAINS).decompose(Q)
    assert d.path == "repaired" and not d.flagged and d.reason
    assert len(d.subtasks) == 2


def test_left_out_clause_is_added_back():
    one = {"subtasks": [GOOD["subtasks"][0]]}
    d = llm_decomposer(ScriptedLLM([json.dumps(one)]), DOMAINS).decompose(Q)
    assert d.path == "repaired" and len(d.subtasks) == 2 and "left-out" in d.reason


def test_invented_subtasks_dropped_then_fallback():
    bad = {"subtasks": [{"subtask": "Tell me a joke about penguins", "domain": "general"}]}
    d = llm_decomposer(ScriptedLLM([json.dumps(bad)]), DOMAINS).decompose(Q)
    assert d.path == "clause_splitter" and d.flagged and "invalid LLM output" in d.reason
    assert len(d.subtasks) == 2


@pytest.mark.parametrize("raw", ["no json at all", "{}", "[]", "42", '{"subtasks": "x"}'])
def test_unrepairable_output_falls_back_flagged(raw):
    d = llm_decomposer(ScriptedLLM([raw]), DOMAINS).decompose(Q)
    assert d.path == "clause_splitter" and d.flagged
    assert [s.domain_hint for s in d.subtasks] == ["medicine", "finance"]


def test_llm_down_falls_back_flagged():
    d = llm_decomposer(ScriptedLLM(down=True), DOMAINS).decompose(Q)
    assert d.path == "clause_splitter" and d.flagged and "unavailable" in d.reason


def test_parse_raises_on_nothing_valid():
    with pytest.raises(DecompositionError):
        llm_decomposer(ScriptedLLM(), DOMAINS).parse('{"subtasks": [{"domain": "law"}]}', Q)


def test_prefill_used_without_schema_support():
    class Plain(ScriptedLLM):
        supports_json_schema = False

        def complete(self, messages, *, json_schema=None, prefill="", **kw):
            assert json_schema is None and prefill.startswith('{"subtasks": [{"subtask": "')
            return prefill + 'What dose of ibuprofen is safe for a fever?", "domain": "medicine"}, ' \
                '{"subtask": "How do I deduct medical costs on my taxes?", "domain": "finance"}]}'

    d = llm_decomposer(Plain(), DOMAINS, labels=True).decompose(Q)
    assert d.path == "llm" and len(d.subtasks) == 2


def test_unlabelled_output_is_a_list_of_strings():
    class Plain(ScriptedLLM):
        supports_json_schema = False

        def complete(self, messages, *, json_schema=None, prefill="", **kw):
            assert prefill == '{"subtasks": ["'
            assert "domain" not in messages[0]["content"] and "domain" not in messages[2]["content"]
            return prefill + 'What dose of ibuprofen is safe for a fever?", ' \
                '"How do I deduct medical costs on my taxes?"]}'

    d = llm_decomposer(Plain(), DOMAINS).decompose(Q)
    assert d.path == "llm" and not d.reason
    assert [s.text for s in d.subtasks] == ["What dose of ibuprofen is safe for a fever?",
                                            "How do I deduct medical costs on my taxes?"]
    assert [s.domain_hint for s in d.subtasks] == ["medicine", "finance"]  # keyword hints, not the LLM's


def test_unlabelled_schema_and_truncated_output():
    schema = decomposition_schema(DOMAINS, 4, labels=False)
    assert schema["properties"]["subtasks"]["items"] == {"type": "string", "minLength": 1, "maxLength": 400}
    assert schema["properties"]["subtasks"]["maxItems"] == 4
    cut = '{"subtasks": ["What dose of ibuprofen is safe for a fever?", "How do I deduct medical costs on my taxes?'
    d = llm_decomposer(ScriptedLLM([cut]), DOMAINS).decompose(Q)
    assert d.path == "repaired" and len(d.subtasks) == 2 and "closed" in d.reason


def test_merged_subtask_is_split():
    q = "Explain how compound interest works and write a JavaScript function that calculates it."
    merged = {"subtasks": [{"subtask": q, "domain": "finance"}]}
    d = llm_decomposer(ScriptedLLM([json.dumps(merged)]), DOMAINS).decompose(q)
    assert d.path == "repaired" and len(d.subtasks) == 2 and "split merged" in d.reason


def test_an_answer_instead_of_a_subtask_is_rejected():
    q = "Explain what a non-compete clause is. Also, what is the difference between a stock and a bond?"
    out = {"subtasks": [{"subtask": "A non-compete clause is a clause that does not affect the outcome of a "
                                    "transaction.", "domain": "law"},
                        {"subtask": "What is the difference between a stock and a bond?", "domain": "finance"}]}
    d = llm_decomposer(ScriptedLLM([json.dumps(out)]), DOMAINS).decompose(q)
    assert d.path == "repaired" and "dropped invented" in d.reason
    assert [s.text for s in d.subtasks] == ["What is the difference between a stock and a bond?",
                                            "Explain what a non-compete clause is."]


def test_a_long_single_request_skips_the_llm():
    """Over 40 words and with a newline (so not a "simple question"), but the clause splitter keeps it whole:
    the LLM is not asked (it would fail the test: ScriptedLLM has nothing scripted)."""
    brief = ("Imagine yourself as a doctor tasked with devising innovative remedies for various ailments and "
             "maladies, whose expertise encompasses prescribing traditional medications, herbal treatments and "
             "alternative natural solutions while taking into account the patient's age, lifestyle and medical "
             "background when\noffering recommendations")
    d = llm_decomposer(ScriptedLLM(), DOMAINS).decompose(brief)
    assert d.path == "fast_path" and [s.text for s in d.subtasks] == [brief] and not d.flagged


def test_merged_subtask_is_split_even_when_the_llm_dropped_the_request_words():
    # the LLM kept the topics but dropped "Please explain how" -- still two of the splitter's requests
    q = "Please explain how a heat pump works. After that, show me how to undo a git commit."
    raw = json.dumps({"subtasks": ["A heat pump works. After that, show me how to undo a git commit"]})
    subs, repaired, notes = llm_decomposer(ScriptedLLM(), DOMAINS, labels=False).parse(raw, q)
    assert [s.text for s in subs] == ["Please explain how a heat pump works.", "Show me how to undo a git commit."]
    assert repaired and any("split merged" in n for n in notes)


def test_cut_off_copy_of_another_subtask_is_dropped():
    q = "Review this SQL: SELECT * FROM t WHERE id = 1. Also, what is a deductible?"
    raw = json.dumps({"subtasks": ["Review this SQL:", "What is a deductible?",
                                   "Review this SQL: SELECT * FROM t WHERE id = 1."]})
    subs, repaired, notes = llm_decomposer(ScriptedLLM(), DOMAINS, labels=False).parse(raw, q)
    assert [s.text for s in subs] == ["Review this SQL: SELECT * FROM t WHERE id = 1.", "What is a deductible?"]
    assert repaired and any("cut-off copy" in n for n in notes)
    # two different questions that share a start are both kept
    raw = json.dumps({"subtasks": ["What is GDP?", "What is GDP growth?"]})
    subs, _, notes = llm_decomposer(ScriptedLLM(), DOMAINS, labels=False).parse(raw, "What is GDP? What is GDP growth?")
    assert [s.text for s in subs] == ["What is GDP?", "What is GDP growth?"] and not notes


def test_cut_off_subtask_is_replaced_by_the_clause_added_back_for_it():
    # the LLM gave only the cut-off start; coverage adds the splitter's clause, which takes the copy's place
    q = "Review this SQL: SELECT * FROM t WHERE id = 1. Also, what is a deductible?"
    raw = json.dumps({"subtasks": ["Review this SQL:", "What is a deductible?"]})
    subs, _, notes = llm_decomposer(ScriptedLLM(), DOMAINS, labels=False).parse(raw, q)
    assert [s.text for s in subs] == ["Review this SQL: SELECT * FROM t WHERE id = 1.", "What is a deductible?"]
    assert any("cut-off copy" in n for n in notes)


def test_the_output_budget_fits_a_faithful_decomposition_and_cuts_an_answer():
    """The LLM's budget holds every shipped compound query's clause-split JSON (counted with the router LLM's
    own tokenizer), and is far below ``max_tokens`` for a short query, where an LLM answering the question
    instead of splitting it would otherwise write on to ``max_tokens``."""
    import json

    from core.settings import Settings
    from corpora.evalsets import data_file
    from router.clauses import split_clauses
    from router.evaluate import load_rows

    folder = Settings().home / "models" / "qwen-0.5b"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("qwen-0.5b not in the model store")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    dec = llm_decomposer(ScriptedLLM(), DOMAINS, max_tokens=2048)
    for row in load_rows(data_file("compound_queries.jsonl")):
        faithful = json.dumps(split_clauses(row["query"]))[2:] + "}"  # after the prefill '{"subtasks": ["'
        assert len(tok(faithful)["input_ids"]) <= dec.output_budget(row["query"]), row["query"][:80]
    short = "Explain what a non-compete clause is. Also, what is the difference between a stock and a bond?"
    assert llm_decomposer(ScriptedLLM(), DOMAINS).output_budget(short) <= 80 < 256


def test_a_clear_split_skips_the_llm():
    llm = ScriptedLLM(down=True)  # would fail the call, flagged, if it were asked
    d = Decomposer(llm, DOMAINS).decompose(Q)
    assert d.path == "clear_split" and not d.flagged
    assert [s.text for s in d.subtasks] == [s["subtask"] for s in GOOD["subtasks"]]
    assert llm.calls == 0


def test_an_unclear_split_asks_the_llm():
    q = "How have the Alps and the Rhine influenced settlement in Western Europe? List three impacts."
    one = {"subtasks": [{"subtask": q, "domain": "general"}]}
    llm = ScriptedLLM([json.dumps(one)])
    d = Decomposer(llm, DOMAINS).decompose(q)
    assert llm.calls == 1 and d.path in ("llm", "repaired")


@pytest.mark.parametrize("parts, clear", [
    (["What is EBITDA?", "How do I reverse a linked list in C?"], True),
    (["Explain Docker containers versus virtual machines.", "Tell me what causes migraines."], True),
    (["How did the Alps shape farming?", "List three impacts."], False),  # no topic of its own
    (["Explain what inflation is.", "Tell me when the Berlin Wall fell."], False),  # one topic word, no '?'
    (["The symptoms of dehydration.", "What is a tort?"], False),  # not a request
    (["What is GDP?"], False),
])
def test_is_clear_split(parts, clear):
    assert is_clear_split(parts) is clear


def test_more_llm_parts_than_the_splitter_finds_keeps_the_splitters():
    q = ("Which of these rocks will float in water? (A) granite (B) pumice. "
         "Second, which crop matters most to South American farmers?")
    cut = {"subtasks": [{"subtask": "Which of these rocks will float in water?", "domain": "general"},
                        {"subtask": "(A) granite (B) pumice", "domain": "general"},
                        {"subtask": "Which crop matters most to South American farmers?", "domain": "general"}]}
    d = llm_decomposer(ScriptedLLM([json.dumps(cut)]), DOMAINS).decompose(q)
    assert d.path == "repaired" and "exceed the clause splitter's 2" in d.reason
    assert [s.text for s in d.subtasks] == [
        "Which of these rocks will float in water? (A) granite (B) pumice.",
        "Which crop matters most to South American farmers?"]


def test_without_the_fast_path_even_a_clear_split_asks_the_llm():
    llm = ScriptedLLM([json.dumps(GOOD)])
    d = Decomposer(llm, DOMAINS, fast_path=False).decompose(Q)
    assert llm.calls == 1 and d.path == "llm"
