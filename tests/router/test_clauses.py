import pytest

from router.clauses import domain_hint, is_single_question, split_clauses


@pytest.mark.parametrize(("query", "n"), [
    ("What is a tort?", 1),
    ("What is the difference between a tuple and list in Python?", 1),
    ("Explain recursion, which is hard to grasp.", 1),
    ("I'm 45 and take statins. What dose of ibuprofen is safe, and how do I deduct medical costs?", 2),
    ("Write a Python function to reverse a string and explain how a Roth IRA works.", 2),
    ("What are the symptoms of diabetes? Also, can my employer fire me for being sick?", 2),
    ("1. What is GDP?\n2. How do I sort a list in Python?", 2),
    ("How does inflation affect mortgage rates; what is a tort?", 2),
])
def test_split_counts(query, n):
    parts = split_clauses(query)
    assert len(parts) == n, parts
    assert all(p.strip() for p in parts)


def test_context_sentence_attached_to_next_request():
    parts = split_clauses("My landlord kept my deposit. Can I sue him? What is the capital of Peru?")
    assert parts[0].startswith("My landlord kept my deposit.") and parts[0].endswith("Can I sue him?")


def test_fast_path_check():
    assert is_single_question("What is a mutex?")
    assert not is_single_question("What is a mutex? How do I pay less tax?")
    assert not is_single_question("What is a mutex and how do I pay less tax?")
    assert not is_single_question("word " * 60)
    assert not is_single_question("")


def test_domain_hint():
    assert domain_hint("How do I sort a list in Python?") == "code"
    assert domain_hint("Can my landlord evict me?") == "law"
    assert domain_hint("Is ibuprofen safe with a fever?") == "medicine"
    assert domain_hint("Should I invest in bonds?") == "finance"
    assert domain_hint("Hello there") == "general"
    assert domain_hint("sort a list", ["law", "general"]) == "general"


@pytest.mark.parametrize("query", [
    "How do I read an income statement? I'd also like to know the warning signs of type 2 diabetes.",
    "Please explain how insulin resistance develops. After that, show me how to squash commits with git.",
    "Roughly what is the population of Canada, and what are the elements of a valid contract?",
    "Fix this Python error: TypeError: unhashable type: 'list'. Also, what's a normal resting heart rate?",
])
def test_lead_ins_and_wants_are_requests(query):
    assert len(split_clauses(query)) == 2
    assert not is_single_question(query)


def test_keywords_match_word_starts_only():
    assert domain_hint("What is the capital of Australia?") == "general"  # not "api" inside "capital"
