"""Entity linking, concept density and coverage: tiny graph for exact behaviour, shipped graphs for reality."""

from __future__ import annotations

import pytest

import kg
from core.settings import Settings
from kg.linking import Linker, Mention
from kg.model import KnowledgeGraph, Node
from kg.text import label_key, stem


def test_normalisation() -> None:
    assert label_key("Chronic Kidney Diseases") == ("chronic", "kidney", "disease")
    assert stem("courts") == "court" and stem("boxes") == "box" and stem("policies") == "policy"
    assert stem("news") == "news" and stem("physics") == "physics" and stem("class") == "class"
    assert label_key("Crème brûlée") == ("creme", "brulee")
    assert label_key("the defendant's") == ("the", "defendant")


def test_longest_match_synonyms_and_offsets(tiny: KnowledgeGraph) -> None:
    text = "The Supreme Court heard appeals from every court of appeals."
    ms = kg.link(text, tiny)
    assert [(m.node_id, m.method) for m in ms] == [("t:supreme", "exact"), ("t:appellate", "synonym")]
    assert all(text[m.start : m.end] == m.text for m in ms)
    assert ms[0].text == "Supreme Court" and ms[0].score == 1.0  # longest match beats "court"
    assert ms[1].score == pytest.approx(0.9)


def test_plurals_possessives_and_stopwords(tiny: KnowledgeGraph) -> None:
    ms = kg.link("Torts and verdicts: the court's verdict.", tiny)
    assert [m.node_id for m in ms] == ["t:tort", "t:verdict", "t:court", "t:verdict"]
    tiny.add_node(Node("t:the", "the"))
    tiny.add_node(Node("t:ab", "ab"))
    assert kg.link("the ab", tiny) == []  # stop words and 2-letter names never link alone


def test_acronyms_are_case_sensitive(tiny: KnowledgeGraph) -> None:
    assert [m.node_id for m in kg.link("Ruled by SCOTUS today", tiny)] == ["t:supreme"]
    assert kg.link("ruled by scotus today", tiny) == []


def test_ambiguity_and_minor_names() -> None:
    g = KnowledgeGraph("general")
    g.add_node(Node("x:bank1", "bank", (), "sloping land", attrs={"counts": [25], "pos": "n"}))
    g.add_node(
        Node(
            "x:bank2", "depository", ("bank",), "financial institution", attrs={"counts": [0, 20], "pos": "n"}
        )
    )
    g.add_node(Node("x:bank3", "bank", (), "to tip laterally", attrs={"counts": [3], "pos": "v"}))
    g.add_node(Node("x:gunman", "gunman", ("gun",), "a man armed with a gun", attrs={"minor": ["gun"]}))
    (m,) = kg.link("the bank", g)
    assert m.node_id == "x:bank1" and set(m.candidates) == {"x:bank2", "x:bank3"}
    assert m.score == pytest.approx(26 / (26 + 21 + 4), abs=1e-3)
    (m,) = kg.link("to bank", g)  # the word before picks the verb sense
    assert m.node_id == "x:bank3"
    assert kg.link("he had a gun", g) == []


def test_linker_cache_follows_mutations(tiny: KnowledgeGraph) -> None:
    assert kg.link("a judge", tiny) == []
    tiny.add_node(Node("t:judge", "judge"))
    assert [m.node_id for m in kg.link("a judge", tiny)] == ["t:judge"]
    assert Linker(tiny).n_patterns > 0


def test_concept_density(tiny: KnowledgeGraph) -> None:
    assert kg.concept_density("", tiny) == 0.0
    # 6 tokens, "supreme court" (2) and "verdict" (1) covered
    assert kg.concept_density("The supreme court gave a verdict", tiny) == pytest.approx(3 / 6)


def test_coverage(tiny: KnowledgeGraph) -> None:
    other = KnowledgeGraph("code")
    other.add_node(Node("c:compiler", "compiler"))
    graphs = {"law": tiny, "code": other}
    text = "The court asked whether the compiler was a tribunal."
    assert kg.coverage(text, tiny, graphs) == pytest.approx(2 / 3)
    assert kg.coverage(text, other, graphs) == pytest.approx(1 / 3)
    assert kg.coverage("nothing here", tiny, graphs) == 0.0


def test_mention_is_a_value() -> None:
    m = Mention("a", "A", 0, 1, 1.0, "exact")
    assert m == Mention("a", "A", 0, 1, 1.0, "exact") and m.candidates == ()


# ------------------------------------------------------------------ shipped graphs
@pytest.mark.parametrize(
    ("domain", "text", "expected"),
    [
        (
            "medicine",
            "Type 2 diabetes mellitus with hypertension; started metformin after seizures.",
            {"ICD10CM:E11", "HP:0001250", "DRUG:metformin"},
        ),
        (
            "law",
            "The appellate court reversed the verdict for breach of contract.",
            {"WN:appellate_court.n.01", "WN:verdict.n.01"},
        ),
        (
            "code",
            "Implement a binary search on a linked list and explain tail recursion in the compiler.",
            {"FOLDOC:binary search", "FOLDOC:linked list", "FOLDOC:tail recursion", "FOLDOC:compiler"},
        ),
        (
            "finance",
            "The central bank raised interest rates to curb inflation.",
            {"WN:central_bank.n.01", "WN:interest_rate.n.01", "WN:inflation.n.01"},
        ),
        (
            "general",
            "The dog chased a cat across the river.",
            {"WN:dog.n.01", "WN:cat.n.01", "WN:river.n.01"},
        ),
    ],
)
@pytest.mark.slow
def test_shipped_graphs_link_real_text(domain: str, text: str, expected: set[str]) -> None:
    graph = kg.load_graph(Settings(), domain)
    found = {m.node_id for m in kg.link(text, graph)}
    assert expected <= found, found


def test_common_words_do_not_flood_domain_graphs() -> None:
    law = kg.load_graph(Settings(), "law")
    text = "We made it clear on the first day that the man would find his way home in time."
    assert kg.link(text, law) == []
    assert kg.concept_density(text, law) == 0.0
    assert kg.concept_density(text, kg.load_graph(Settings(), "general")) > 0.2


def test_coverage_on_shipped_graphs() -> None:
    graphs = kg.load_all(Settings())
    text = "The defendant's lawyer filed a motion to suppress the evidence."
    assert kg.coverage(text, kg.load_graph(Settings(), "law"), graphs) > kg.coverage(text, kg.load_graph(Settings(), "code"), graphs)


def test_fallback_candidate_phrases() -> None:
    from kg.fallback import candidate_phrases

    text = "A heart attack, then acute kidney failure in the old patient."
    mentions = [Mention("x", "patient", text.index("patient"), text.index("patient") + 7, 1.0, "exact")]
    assert [p for _, _, p in candidate_phrases(text, mentions)] == ["heart attack", "acute kidney failure"]
    assert [p for _, _, p in candidate_phrases(text, mentions, min_tokens=1)][-1] == "old"
    long = "very long running distributed stream processing framework"
    assert [p for _, _, p in candidate_phrases(long, [])] == [
        "distributed stream processing framework"
    ]  # head noun at the end


@pytest.mark.slow
def test_embedding_fallback_with_the_real_encoder(qsef_home, tiny: KnowledgeGraph) -> None:
    text = "A civil wrongdoing was judged by the highest appellate tribunal"
    exact = kg.link(text, tiny)
    with_fallback = kg.link(text, tiny, fallback=True, settings=Settings())
    emb = [m for m in with_fallback if m.method == "embedding"]
    assert {m.node_id for m in exact} <= {m.node_id for m in with_fallback}
    assert all(0.85 <= m.score <= 1.0 and " " in m.text for m in emb)
    assert (qsef_home / "kg" / "cache").is_dir()  # label embeddings cached as safetensors


def test_stop_words_are_not_stemmed_into_names() -> None:
    g = KnowledgeGraph("law")
    g.add_node(Node("x:doe", "Doe John"))
    g.add_node(Node("x:doe2", "doe"))
    assert kg.link("What does John know?", g) == []
    assert [m.node_id for m in kg.link("a doe and two does", g)] == ["x:doe2"]


# ------------------------------------------------------------------ disk cache
LAW_TEXTS = [
    "The Supreme Court of California heard the appeal; the tenant sued under the MIT license.",
    "A tort is a civil wrong; the court of appeals reversed the verdict.",
    "to appeal the judgment, file with the Ninth Circuit",
]


def test_cached_linker_links_like_a_freshly_compiled_one(qsef_home) -> None:
    """The shipped law graph: compiled once, saved, read back by a new process's path — same mentions."""
    from kg import linking, storage

    graph = storage.load_graph(Settings(), "law")
    fresh = Linker(graph)
    path = linking._cache_path(graph)
    assert path is not None and not path.exists()
    built = linking._build_linker(graph)  # compiles and writes the cache
    assert path.is_file()
    cached = linking._build_linker(graph)  # reads it back
    assert cached.n_patterns == built.n_patterns == fresh.n_patterns
    for text in LAW_TEXTS:
        assert cached.link(text) == fresh.link(text)
        assert cached.link(text)  # the texts do link


def test_changed_graph_is_not_read_from_the_cache(qsef_home) -> None:
    from kg import linking, storage

    graph = storage.load_graph(Settings(), "law", cache=False)
    linking._build_linker(graph)
    graph.add_node(Node("u:x", "quasi-contract", (), "an obligation imposed by law"))
    assert linking._cache_path(graph) is None  # modified since loaded: nothing to look up
    assert [m.node_id for m in linking.get_linker(graph).link("a quasi-contract claim")] == ["u:x"]
    assert graph.copy().origin is None
