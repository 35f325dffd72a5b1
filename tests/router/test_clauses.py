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


@pytest.mark.parametrize(("query", "expected"), [
    # a leading subordinate clause conditions the question after its comma: not a request of its own
    ("If my flight is cancelled, can I get a refund? And how do I reverse a string in Go?",
     ["If my flight is cancelled, can I get a refund?", "How do I reverse a string in Go?"]),
    ("After I retire, do I still pay payroll tax?", ["After I retire, do I still pay payroll tax?"]),
    # ... but "when" + auxiliary asks a question
    ("When did the Berlin Wall fall, and how long was it?", ["When did the Berlin Wall fall?", "How long was it?"]),
    # a statement led by "when" with no question mark is context, kept with its request
    ("Build a to-do app in React. When a task is done, it moves to the bottom.",
     ["Build a to-do app in React. When a task is done, it moves to the bottom."]),
    # connectives such as "Separately," / "On another note," are dropped, not glued to the previous part
    ("What causes hiccups? Separately, who wrote Dracula?", ["What causes hiccups?", "Who wrote Dracula?"]),
    ("Is a verbal contract binding? On another note, what is a hash map?",
     ["Is a verbal contract binding?", "What is a hash map?"]),
    # a starter that ends the sentence asks about the clause before it
    ("Which planet is the hottest, and why?", ["Which planet is the hottest, and why?"]),
    # "list"/"name" start a clause before a count or determiner
    ("Explain what a bond ladder is and list three risks of it.",
     ["Explain what a bond ladder is.", "List three risks of it."]),
])
def test_split_boundaries(query, expected):
    assert split_clauses(query) == expected


def test_counted_list_after_colon_is_split_into_its_items():
    parts = split_clauses("I need two things: a regex for US zip codes, and the tallest mountain in Africa.")
    assert parts == ["A regex for US zip codes.", "The tallest mountain in Africa."]
    assert not is_single_question("Three things: the boiling point of water, a haiku about rain, and a tort.")
    # the count must match: otherwise the sentence is left as it is
    assert split_clauses("Three things: bread, milk.") == ["Three things: bread, milk."]
    # a noun list without the colon form is not split
    assert len(split_clauses("What is the difference between a tuple and list in Python?")) == 1


def test_plus_repeats_the_request_verb_for_its_second_object():
    assert split_clauses("Tell me the rules of cricket, plus a good recipe for lentil soup.") == [
        "Tell me the rules of cricket.", "Tell me a good recipe for lentil soup."]
    assert split_clauses("What is 7 plus 5?") == ["What is 7 plus 5?"]
    # not an imperative: no verb to repeat, the sentence is left whole
    assert split_clauses("My rent is high, plus my car broke down.") == ["My rent is high, plus my car broke down."]


def test_options_stay_with_their_question():
    q = ("Which of these is a mammal? (A) a shark. It swims (B) a whale; it breathes air (C) a trout, and why? "
         "Also, how do I sort a dict by value in Python?")
    assert split_clauses(q) == [
        "Which of these is a mammal? (A) a shark. It swims (B) a whale; it breathes air (C) a trout, and why?",
        "How do I sort a dict by value in Python?"]
    numbered = "1) Which number is prime? (A) 4 (B) 9 (C) 7\n2) What is an easement?"
    assert split_clauses(numbered) == ["Which number is prime? (A) 4 (B) 9 (C) 7", "What is an easement?"]
    # a lone "(A)" is no run of options
    assert len(split_clauses("What does (A) mean in a bond rating? And what is a tort?")) == 2


def test_questions_with_options_are_requests_and_lead_ins_with_a_colon_are_dropped():
    # a statement followed by its options asks something, even without a question mark
    q = "What is a lien?\nSecond question: The capital of Kenya is ___ (A) Nairobi (B) Mombasa"
    assert split_clauses(q) == ["What is a lien?", "The capital of Kenya is ___ (A) Nairobi (B) Mombasa."]
    q = "Water boils at sea level at (A) 90 C (B) 100 C. Another one: how do I sort a list?"
    assert split_clauses(q) == ["Water boils at sea level at (A) 90 C (B) 100 C.", "How do I sort a list?"]
    assert split_clauses("My second question: what is a lien?") == ["What is a lien?"]
    # context sentences before a question with options stay with it
    q = "Statement 1 | Every group is abelian. Statement 2 | Z is a ring. (A) True, True (B) False, False"
    assert len(split_clauses(q)) == 1


@pytest.mark.parametrize(("query", "expected"), [
    # "Two things:" counts the sentences that follow, not the commas of the first one
    ("Two things: Under the Uniform Commercial Code (UCC), which is the title of section 9-203? "
     "And which crop is South America's main contribution to Europe?",
     ["Under the Uniform Commercial Code (UCC), which is the title of section 9-203?",
      "Which crop is South America's main contribution to Europe?"]),
    # ordinal items are one request each, however many sentences they hold
    ("A few questions. First, if a bank holds $500 and must reserve $50, what is the reserve ratio? How much "
     "does it hold in excess reserves? Second, what is a tort?",
     ["A few questions. If a bank holds $500 and must reserve $50, what is the reserve ratio? How much "
      "does it hold in excess reserves?", "What is a tort?"]),
    ("1) If a bank holds $500, what is the reserve ratio? How much is in excess reserves?\n2) What is a tort?",
     ["If a bank holds $500, what is the reserve ratio? How much is in excess reserves?", "What is a tort?"]),
    # an unnumbered first request, then numbered ones
    ("What is a lien?\nSecond question: Who wrote Dracula? Answer briefly.\nThird question: What is GDP?",
     ["What is a lien?", "Who wrote Dracula? Answer briefly.", "What is GDP?"]),
    # numbered statements that the options refer to stay with their question
    ("Which of these can be solved greedily? I. Minimum spanning tree II. Maximum clique III. Maximum flow "
     "(A) I only (B) II only (C) III only (D) I and II only. What is a tort?",
     ["Which of these can be solved greedily? I. Minimum spanning tree II. Maximum clique III. Maximum flow "
      "(A) I only (B) II only (C) III only (D) I and II only.", "What is a tort?"]),
    # so does a table header over the options
    ("In which of the following ways will exports change? EXPORTS DEMAND FOR $ (A) Decrease Decrease "
     "(B) Increase Decrease. What is a tort?",
     ["In which of the following ways will exports change? EXPORTS DEMAND FOR $ (A) Decrease Decrease "
      "(B) Increase Decrease.", "What is a tort?"]),
])
def test_numbered_items_statements_and_headers_are_not_split(query, expected):
    assert split_clauses(query) == expected


def test_a_single_ordinal_or_a_question_stem_with_options_still_splits():
    # one "Second question:" is no numbering: the sentences split as usual
    assert split_clauses("What is a lien?\nSecond question: Who wrote Dracula? What is GDP?") == [
        "What is a lien?", "Who wrote Dracula?", "What is GDP?"]
    # a new question whose stem is a statement in lower case is not a table header
    assert split_clauses("What is macroeconomics? Another one: Macroeconomics focuses on (A) laws (B) prices") == [
        "What is macroeconomics?", "Macroeconomics focuses on (A) laws (B) prices."]
