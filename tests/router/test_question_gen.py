"""The generated-question filters (form, label leaks, topic, duplicates, evaluation overlap) on the real encoder,
and the seeded concept sampling on the real graphs."""

from __future__ import annotations

import pytest

from core.settings import Settings
from router.question_gen import (
    SYSTEM,
    Candidate,
    Seed,
    clean,
    filter_candidates,
    is_request,
    leaks_label,
    mentions,
    messages_for,
    normalise,
    sample_concepts,
)


@pytest.fixture(scope="module")
def encode():
    from qsef.encoder import get_encoder

    enc = get_encoder(Settings())
    return lambda texts: enc.encode(list(texts))


def _cand(text: str, domain: str = "code", concept_id: str = "C:1") -> Candidate:
    return Candidate(text, domain, "graph", concept_id, "list", "foldoc", "howto")


def test_clean_strips_preambles_quotes_and_list_marks():
    assert clean('Question: "How do I center a div?"\nAnswer: use flexbox') == "How do I center a div?"
    assert clean("Sure! Here is a question: What is GDP?") == "What is GDP?"
    assert clean("1. My knee hurts when I run, why?") == "My knee hurts when I run, why?"
    assert clean("\n\n  **Explain what a trademark protects.**  ") == "Explain what a trademark protects."


def test_is_request_needs_a_question_or_a_request_of_plausible_length():
    assert is_request("Write a SQL query that returns the top ten customers by total spend.")
    assert is_request("My landlord kept my deposit, can he do that?")
    assert not is_request("A trademark protects brand names and logos.")  # a statement: an answer, not a question
    assert not is_request("Why?")
    assert not is_request("What " + "very " * 40 + "long?")
    assert not is_request("What is this? And what is that?")


def test_leaks_label_but_not_everyday_words():
    assert leaks_label("Which category of law covers this?")
    assert leaks_label("Here is a finance question about bonds?")
    assert leaks_label("In the medical domain, what is a stent?")
    assert not leaks_label("How do I register a domain name?")
    assert not leaks_label("Is it legal to record a phone call?")


def test_mentions_matches_names_and_long_head_words():
    assert mentions("How does a bankruptcy court work?", "Bankruptcy Court, W.D. Kentucky")
    assert mentions("What is a mortgage?", "mortgage")
    assert not mentions("What is the capital of France?", "mortgage")


def test_filters_drop_duplicates_near_duplicates_and_off_topic(encode):
    seeds = {"C:1": Seed("code", "graph", "C:1", "list", "an ordered sequence of values", "foldoc"),
             "C:2": Seed("finance", "graph", "C:2", "mortgage", "a loan secured by a house", "wordnet")}
    cands = [_cand("How do I sort a list in Python?"),
             _cand("how do I sort a list in python"),  # exact after normalising
             _cand("How can I sort a list in Python?"),  # paraphrase: near duplicate
             _cand("What is the capital of France?", "finance", "C:2"),  # off the concept's topic
             _cand("What does a fixed-rate mortgage mean for my monthly payment?", "finance", "C:2"),
             _cand("The mortgage is a loan.", "finance", "C:2")]  # not a question
    kept, report = filter_candidates(cands, encode=encode, eval_rows=[], seeds=seeds)
    assert [c.text for c in kept] == ["How do I sort a list in Python?",
                                      "What does a fixed-rate mortgage mean for my monthly payment?"]
    counts = report.as_dict()
    assert counts["not_a_request"] == 1 and counts["off_topic"] == 1 and counts["kept"] == 2
    assert counts.get("duplicate", 0) + counts.get("near_duplicate", 0) == 2


def test_filters_reject_evaluation_rows_exact_and_near(encode):
    eval_rows = ["How do I center a div with CSS flexbox?", "Explain what a trademark protects."]
    cands = [_cand("how do I center a DIV with css flexbox"),  # the eval row, case and punctuation changed
             _cand("Explain what a trademark protects?"),
             _cand("How can I center a div using CSS flexbox?"),  # a paraphrase of an eval row
             _cand("Why does my React component re-render when its props change?")]
    kept, report = filter_candidates(cands, encode=encode, eval_rows=eval_rows)
    assert [c.text for c in kept] == ["Why does my React component re-render when its props change?"]
    assert report.as_dict()["eval_exact"] == 2 and report.as_dict()["eval_near_dup"] == 1
    assert normalise("Explain what a trademark protects?") == normalise(eval_rows[1])


def test_concept_sampling_is_seeded_and_skips_unlinkable_nodes():
    s = Settings()
    a = sample_concepts(s, "finance", 40, seed=0)
    assert a == sample_concepts(s, "finance", 40, seed=0)
    assert a != sample_concepts(s, "finance", 40, seed=1)
    assert len(a) == 40 and len({x.id for x in a}) == 40
    assert all(x.domain == "finance" and x.label and not x.id.startswith("KG:") for x in a)
    assert {x.source for x in a} <= {"wordnet", "gcide-finance", "gnucash"}


def test_prompt_shares_the_system_turn_and_names_the_concept():
    seed = Seed("law", "graph", "WN:counterclaim.n.01", "counterclaim", "a claim filed in opposition", "wordnet")
    msgs = messages_for(seed, ["personal", "howto"])
    assert msgs[0] == {"role": "system", "content": SYSTEM}
    assert "counterclaim" in msgs[1]["content"] and "1. a question about the asker" in msgs[1]["content"]
    assert "2. a practical how-to" in msgs[1]["content"]


def test_copying_the_prompts_domain_words_is_a_leak():
    assert leaks_label("Why should I study money and business today?", "finance")
    assert leaks_label("Why do you need a reservation for your general knowledge?", "general")
    assert not leaks_label("How do I open a savings account?", "finance")
