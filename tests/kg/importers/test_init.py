"""kg.importers (the package): the registry, merging fragments, and building/re-importing domain graphs.

Domain builds run the real importers on the tiny fixtures (courts, licences, GCIDE, the twelve-synset
WordNet); only their locations are injected.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from pathlib import Path

import pytest

import kg.importers as importers
from kg.errors import GraphError, SourceUnavailable
from kg.importers import (
    DOMAIN_SOURCES,
    IMPORTERS,
    Fragment,
    build_domain,
    finance,
    get_importer,
    import_source,
    law,
    merge_fragment,
    wordnet,
)
from kg.importers.base import Importer
from kg.importers.law import GcideLawImporter
from kg.importers.medicine import DrugsImporter
from kg.importers.wordnet import WordNetImporter
from kg.model import KnowledgeGraph

FIXTURES = Path(__file__).parent / "fixtures"
WORDNET = FIXTURES / "wordnet"
TESTS = Path(__file__).parent


def _importer_class(name: str) -> type[Importer]:
    factory = IMPORTERS[name]
    return DrugsImporter if factory is importers._drugs else factory


@pytest.mark.parametrize("name", sorted(IMPORTERS))
def test_every_registered_importer_has_a_test_module(name):
    cls = _importer_class(name)
    assert cls.name == name
    module = cls.__module__.rsplit(".", 1)[1]
    assert (TESTS / f"test_{module}.py").is_file()
    assert cls.title and cls.licence and cls.url and cls.domains


@pytest.mark.parametrize("domain", sorted(DOMAIN_SOURCES))
def test_domain_recipes_name_registered_importers_of_that_domain(domain):
    required, optional = DOMAIN_SOURCES[domain]
    for name in (*required, *optional):
        assert domain in _importer_class(name).domains, (domain, name)


def test_unknown_importer_names_the_registered_ones():
    with pytest.raises(GraphError, match=r"unknown source 'hpoo'; registered importers: courts, drugs, foldoc"):
        get_importer("hpoo")


def test_drugs_factory_keeps_common_word_brands_without_wordnet(monkeypatch, caplog):
    def missing():
        raise SourceUnavailable("no WordNet")

    monkeypatch.setattr(wordnet, "common_words", missing)
    with caplog.at_level(logging.WARNING, logger="kg.importers"):
        importer = get_importer("drugs")
    assert isinstance(importer, DrugsImporter) and importer.common_words == frozenset()
    assert "drug brand names that are common words are kept" in caplog.text
    monkeypatch.setattr(wordnet, "common_words", lambda: frozenset({"max"}))
    assert get_importer("drugs").common_words == frozenset({"max"})


def _frag(source: str, nodes, edges=(), roots=()) -> Fragment:
    frag = Fragment(source)
    for nid, label in nodes:
        frag.node(nid, label)
    for edge in edges:
        frag.edge(*edge)
    frag.roots.extend(roots)
    return frag


def test_merge_fragment_first_definition_wins_and_missing_ends_are_dropped():
    g = KnowledgeGraph("law")
    merge_fragment(g, _frag("a", [("X:1", "first"), ("X:2", "two")], [("X:2", "is_a", "X:1")], ["X:1"]))
    counts = merge_fragment(
        g,
        _frag(
            "b",
            [("X:1", "second"), ("B:1", "b one")],
            [("B:1", "is_a", "X:1"), ("B:1", "related", "WN:nowhere.n.01"), ("X:2", "related", "B:1")],
            ["B:1", "X:2"],
        ),
    )
    assert counts == {"nodes": 1, "nodes_already_present": 1, "edges": 2, "edges_dropped_missing_end": 1}
    assert g.node("X:1").label == "first" and g.node("X:1").source == "a"
    assert g.node("B:1").domain == "law"
    assert g.has_edge("X:1", "is_a", "KG:law")  # a root without a parent hangs under the domain root
    assert not g.has_edge("B:1", "is_a", "KG:law")  # a root that has a parent does not
    assert not g.has_edge("X:2", "is_a", "KG:law")
    assert g.node("KG:law").attrs == {"nolink": True, "synthetic": True}


def test_merge_fragment_stores_a_symmetric_relation_once():
    g = KnowledgeGraph("law")
    merge_fragment(g, _frag("a", [("A:1", "x"), ("A:2", "y")], [("A:1", "related", "A:2")]))
    counts = merge_fragment(g, _frag("b", [], [("A:2", "related", "A:1"), ("A:2", "see_also", "A:1")]))
    assert counts["edges"] == 1
    assert not g.has_edge("A:2", "related", "A:1")
    assert g.has_edge("A:2", "see_also", "A:1")


def test_break_cycles_drops_the_closing_hierarchy_edge():
    g = KnowledgeGraph("law")
    merge_fragment(
        g,
        _frag(
            "a",
            [("A:1", "a"), ("A:2", "b"), ("A:3", "c")],
            [("A:1", "is_a", "A:2"), ("A:2", "instance_of", "A:3"), ("A:3", "is_a", "A:1"), ("A:3", "see_also", "A:2")],
        ),
    )
    assert importers.break_cycles(g) == 1
    assert sum(1 for e in g.edges() if e.relation in ("is_a", "instance_of")) == 2
    assert g.has_edge("A:3", "see_also", "A:2")  # other relations may loop
    assert importers.break_cycles(g) == 0


def test_bridges_join_unambiguous_labels_of_different_sources():
    g = KnowledgeGraph("law")
    merge_fragment(g, _frag("a", [("A:tort", "Tort"), ("A:bank1", "bank"), ("A:bank2", "bank")]))
    merge_fragment(g, _frag("b", [("B:tort", "tort"), ("B:bank", "bank"), ("B:other", "other")]))
    assert importers.add_bridges(g) == 1
    assert g.has_edge("A:tort", "related", "B:tort")
    assert not any(e.tail == "B:bank" or e.head == "B:bank" for e in g.edges())  # "bank" is ambiguous in a


@pytest.fixture
def law_sources(settings, tmp_path, monkeypatch, dictd_db, serve_package_file):
    """The law recipe on the fixtures: tiny WordNet (law selection: court.n.01 and law.n.01 with their
    hyponyms), courts, licences, GCIDE. Returns the licence index path, which a test may rewrite."""
    import nltk.data

    monkeypatch.setattr(nltk.data, "path", [])
    licences = tmp_path / "scancode-licensedb-index.json"
    shutil.copyfile(FIXTURES / "scancode-licensedb-index.json", licences)
    serve_package_file(
        law,
        {
            ("courts_db", "data/courts.json"): FIXTURES / "courts.json",
            ("license_expression", "data/scancode-licensedb-index.json"): licences,
        },
    )
    gcide = dictd_db("gcide")
    monkeypatch.setitem(IMPORTERS, "gcide-law", lambda: GcideLawImporter(*gcide))
    monkeypatch.setitem(IMPORTERS, "wordnet", lambda: WordNetImporter(WORDNET))
    monkeypatch.setitem(
        wordnet.DOMAIN_SELECTION,
        "law",
        {"topics": [], "direct_topics": [], "roots": ["court.n.01", "law.n.01"], "lexnames": []},
    )
    monkeypatch.setattr(
        wordnet, "mark_ambiguous_names", functools.partial(wordnet.mark_ambiguous_names, system_dir=WORDNET)
    )
    return licences


def test_build_domain_composes_the_recipe(settings, law_sources):
    g = build_domain(settings, "law")
    assert g.domain == "law"
    assert list(g.meta["sources"]) == ["wordnet", "courts", "licenses", "gcide-law"]
    by_source = {}
    for n in g.nodes():
        by_source.setdefault(n.source, set()).add(n.id)
    assert set(by_source) == {"kg", "wordnet", "courts", "licenses", "gcide-law"}
    # sources' roots meet WordNet where its concepts are present, else hang under the domain root
    assert g.parents("COURT:root") == ["WN:court.n.01"]
    assert g.parents("GCIDE:root") == ["WN:law.n.01"]
    assert g.parents("LICENSE:root") == ["KG:law"]
    assert g.parents("WN:entity.n.01") == ["KG:law"]
    assert g.meta["sources"]["licenses"]["counts"]["edges_dropped_missing_end"] == 1  # WN:license.n.01
    assert g.meta["sources"]["courts"]["counts"]["nodes"] == 9
    assert g.meta["sources"]["courts"]["title"].startswith("US courts")


def test_build_domain_bridges_and_flags(settings, law_sources):
    g = build_domain(settings, "law")
    assert g.has_edge("WN:court.n.01", "related", "COURT:root") or g.has_edge("COURT:root", "related", "WN:court.n.01")
    assert g.meta["bridges"] == 1
    assert g.meta["hierarchy_cycles_broken"] == 0
    assert g.node("COURT:root").attrs["minor"] == ["court"]  # a common word, from a strict source
    assert g.meta["ambiguous_names_flagged"] == 1


def test_build_domain_without_wordnet_for_the_flags(settings, law_sources, monkeypatch, caplog):
    def missing(settings, graph):
        raise SourceUnavailable("no WordNet")

    monkeypatch.setattr(wordnet, "mark_ambiguous_names", missing)
    with caplog.at_level(logging.WARNING, logger="kg.importers"):
        g = build_domain(settings, "law", ["courts"])
    assert g.meta["ambiguous_names_flagged"] is None
    assert "ambiguous one-word names are not flagged" in caplog.text


def test_build_domain_with_chosen_sources(settings, law_sources):
    g = build_domain(settings, "law", ["licenses"])
    assert list(g.meta["sources"]) == ["licenses"]
    assert {n.source for n in g.nodes()} == {"kg", "licenses"}


def test_build_domain_skips_an_optional_source_and_records_why(settings, dictd_db, monkeypatch):
    monkeypatch.setattr(finance, "GLOSSARY_MEMBER", "usr/share/help/C/qsef-test-guide/gnc-glossary.xml")
    monkeypatch.delenv("QSEF_GNUCASH_DEB", raising=False)
    if list(Path("/var/cache/apt/archives").glob("gnucash-docs_*.deb")):
        pytest.skip("apt's cache holds a gnucash-docs .deb")
    monkeypatch.setattr(wordnet, "mark_ambiguous_names", lambda settings, graph: 0)
    index, data = dictd_db("gcide")
    monkeypatch.setitem(IMPORTERS, "gcide-finance", lambda: importers.GcideFinanceImporter(index, data))
    g = build_domain(settings, "finance", ["gcide-finance"], optional=["gnucash"])
    skipped = g.meta["sources"]["gnucash"]
    assert "GnuCash glossary not found" in skipped["unavailable"]
    assert skipped["title"].startswith("GnuCash")
    assert "GCIDE-FIN:dividend" in g
    with pytest.raises(SourceUnavailable, match="GnuCash glossary not found"):
        build_domain(settings, "finance", ["gcide-finance", "gnucash"])  # required: the error propagates


def test_build_domain_refuses_an_importer_of_another_domain(settings):
    with pytest.raises(GraphError, match=r"importer 'foldoc' does not build the law domain \(it builds: code\)"):
        build_domain(settings, "law", ["foldoc"])


def test_build_domain_refuses_an_unknown_domain(settings):
    with pytest.raises(GraphError, match="tax"):
        build_domain(settings, "tax")


def test_general_graphs_are_not_flagged(settings, monkeypatch):
    import nltk.data

    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setitem(IMPORTERS, "wordnet", lambda: WordNetImporter(WORDNET))
    g = build_domain(settings, "general")
    assert "ambiguous_names_flagged" not in g.meta
    assert g.number_of_nodes() == 12 + 1
    assert g.parents("WN:adjudicate.v.01") == ["KG:general"]


def test_import_source_replaces_one_sources_nodes(settings, law_sources):
    g = build_domain(settings, "law")
    courts_before = {n.id for n in g.nodes() if n.source == "courts"}
    rows = json.loads(law_sources.read_text())
    rows = [r for r in rows if r["license_key"] != "mit"] + [
        {"license_key": "isc", "category": "Permissive", "spdx_license_key": "ISC"}
    ]
    law_sources.write_text(json.dumps(rows))
    counts = import_source(settings, g, "licenses")
    assert counts["nodes"] == 1 + 5 + 5  # root, licences, categories
    assert "LICENSE:mit" not in g and g.node("LICENSE:isc").label == "ISC"
    assert g.has_edge("LICENSE:isc", "instance_of", "LICENSE-CATEGORY:permissive")
    assert g.parents("LICENSE:root") == ["KG:law"]  # hung under the domain root again
    assert {n.id for n in g.nodes() if n.source == "courts"} == courts_before
    assert g.meta["sources"]["licenses"]["counts"] == counts


def test_import_source_bridges_and_flags_the_new_nodes(settings, law_sources):
    g = build_domain(settings, "law")
    import_source(settings, g, "courts")
    assert g.has_edge("WN:court.n.01", "related", "COURT:root") or g.has_edge("COURT:root", "related", "WN:court.n.01")
    assert g.meta["bridges"] == 1
    assert g.node("COURT:root").attrs["minor"] == ["court"]


def test_import_source_refuses_an_importer_of_another_domain(settings):
    with pytest.raises(GraphError, match=r"importer 'hpo' does not build the law domain"):
        import_source(settings, KnowledgeGraph("law"), "hpo")
