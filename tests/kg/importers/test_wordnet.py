"""kg.importers.wordnet: a twelve-synset WordNet 3.0 database read through NLTK, offline.

The fixture files are in WordNet's own formats (``data.*`` lines at their byte offsets, ``index.*``,
``cntlist.rev`` tag counts). Synsets: entity > institution > court.n.01 (tribunal; topic law) >
appellate court; Old Bailey instance of court.n.01; entity > area > court.n.02 (courtyard, part of
building); law.n.01; the verb adjudicate (judge) derived from court.n.01; legal <-> illegal antonyms.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kg.errors import SourceUnavailable
from kg.importers import wordnet
from kg.importers.wordnet import WordNetImporter, common_words, mark_ambiguous_names, wordnet_reader
from kg.model import KnowledgeGraph, Node

WORDNET = Path(__file__).parent / "fixtures" / "wordnet"


@pytest.fixture(autouse=True)
def _own_nltk_path(monkeypatch):
    """NLTK looks for corpora on a global path: start each test from an empty one."""
    import nltk.data

    monkeypatch.setattr(nltk.data, "path", [])


def _nodes(frag):
    return {n.id: n for n in frag.nodes}


def _triples(frag):
    return {e.triple for e in frag.edges}


@pytest.mark.parametrize("name", ["data.noun", "data.verb", "data.adj"])
def test_fixture_lines_sit_at_their_byte_offsets(name):
    data = (WORDNET / name).read_bytes()
    for m in re.finditer(rb"^(\d{8}) ", data, re.MULTILINE):
        assert int(m.group(1)) == m.start(), f"{name}: synset {m.group(1).decode()} is at byte {m.start()}"


def test_reader_copies_the_files_and_writes_lexnames(settings):
    wn = wordnet_reader(settings, WORDNET)
    target = settings.home / "nltk_data" / "corpora" / "wordnet"
    assert (target / "data.noun").read_bytes() == (WORDNET / "data.noun").read_bytes()
    lexnames = (target / "lexnames").read_text().splitlines()
    assert lexnames[3] == "03\tnoun.Tops\t1" and lexnames[14] == "14\tnoun.group\t1" and len(lexnames) == 45
    assert wn.synset("court.n.02").lexname() == "noun.location"
    assert len(list(wn.all_synsets())) == 12


def test_missing_files_are_named(settings, tmp_path):
    (tmp_path / "data.noun").write_text("")
    with pytest.raises(SourceUnavailable, match=r"WordNet files missing in .*: data\.verb, .*cntlist\.rev; apt-get install wordnet-base"):
        WordNetImporter(tmp_path).build(settings, "general")


@pytest.fixture
def general(settings):
    return WordNetImporter(WORDNET).build(settings, "general")


def test_general_takes_every_synset(general):
    nodes = _nodes(general)
    assert len(nodes) == 12
    court = nodes["WN:court.n.01"]
    assert court.label == "court"
    assert court.synonyms == ("tribunal", "judicature")
    assert court.definition == "an assembly (including one or more judges) to conduct judicial business"
    assert nodes["WN:appellate_court.n.01"].label == "appellate court"  # underscores become spaces
    assert nodes["WN:appellate_court.n.01"].synonyms == ("court of appeals",)
    assert nodes["WN:old_bailey.n.01"].label == "Old Bailey"
    assert all(n.source == "wordnet" and not n.attrs.get("nolink") for n in nodes.values())


def test_sense_counts_become_frequencies(general):
    nodes = _nodes(general)
    assert nodes["WN:court.n.01"].attrs == {"pos": "n", "counts": [20, 4, 0], "freq": 24}  # per name, in order
    assert nodes["WN:adjudicate.v.01"].attrs == {"pos": "v", "counts": [0, 6], "freq": 6}
    assert nodes["WN:building.n.01"].attrs == {"pos": "n"}  # never tagged in SemCor


def test_general_relations(general):
    triples = _triples(general)
    assert ("WN:court.n.01", "is_a", "WN:institution.n.01") in triples
    assert ("WN:old_bailey.n.01", "instance_of", "WN:court.n.01") in triples
    assert ("WN:court.n.02", "part_of", "WN:building.n.01") in triples
    assert ("WN:court.n.01", "in_domain", "WN:law.n.01") in triples
    assert ("WN:legal.a.01", "antonym_of", "WN:illegal.a.01") in triples
    assert ("WN:court.n.01", "related", "WN:adjudicate.v.01") in triples  # derivation: general graph only
    assert not any(e.relation == "is_a" and e.head == "WN:entity.n.01" for e in general.edges)


def test_roots_are_nouns_and_verbs_without_hypernyms(general):
    assert sorted(general.roots) == ["WN:adjudicate.v.01", "WN:entity.n.01"]


def test_general_provenance(general):
    assert general.provenance["version"] == "3.0"
    assert general.provenance["core_synsets"] == 12
    assert general.provenance["context_synsets"] == 0
    assert "selection" not in general.provenance


def _select(monkeypatch, **selection):
    sel = {"topics": [], "direct_topics": [], "roots": [], "lexnames": [], **selection}
    monkeypatch.setitem(wordnet.DOMAIN_SELECTION, "law", sel)
    return sel


def test_domain_takes_topic_members_with_their_hyponyms_and_ancestors_as_context(settings, monkeypatch):
    sel = _select(monkeypatch, topics=["law.n.01"])
    frag = WordNetImporter(WORDNET).build(settings, "law")
    nodes = _nodes(frag)
    core = {"WN:court.n.01", "WN:appellate_court.n.01", "WN:old_bailey.n.01"}
    context = {"WN:institution.n.01", "WN:entity.n.01"}
    assert set(nodes) == core | context  # the topic synset itself is not a member
    assert all(nodes[i].attrs.get("nolink") for i in context)
    assert not any(nodes[i].attrs.get("nolink") for i in core)
    triples = _triples(frag)
    assert ("WN:court.n.01", "is_a", "WN:institution.n.01") in triples
    assert not any(e.relation == "related" for e in frag.edges)  # no derivations outside general
    assert frag.provenance["selection"] == sel
    assert (frag.provenance["core_synsets"], frag.provenance["context_synsets"]) == (3, 2)
    assert frag.roots == ["WN:entity.n.01"]


def test_direct_topics_take_members_only(settings, monkeypatch):
    _select(monkeypatch, direct_topics=["law.n.01"])
    frag = WordNetImporter(WORDNET).build(settings, "law")
    assert frag.provenance["core_synsets"] == 2  # court.n.01 and appellate court, not the Old Bailey
    assert "WN:old_bailey.n.01" not in _nodes(frag)


def test_roots_and_lexicographer_files(settings, monkeypatch):
    _select(monkeypatch, roots=["institution.n.01"], lexnames=["noun.location"])
    nodes = _nodes(WordNetImporter(WORDNET).build(settings, "law"))
    core = {"WN:institution.n.01", "WN:court.n.01", "WN:appellate_court.n.01", "WN:old_bailey.n.01",
            "WN:area.n.01", "WN:court.n.02"}
    assert {i for i, n in nodes.items() if not n.attrs.get("nolink")} == core
    assert {i for i, n in nodes.items() if n.attrs.get("nolink")} == {"WN:entity.n.01"}


def test_a_misspelt_selection_synset_is_an_error(settings, monkeypatch):
    _select(monkeypatch, roots=["cuort.n.01"])
    with pytest.raises(SourceUnavailable, match=r"WordNet has no synset 'cuort\.n\.01' \(domain selection for law\)"):
        WordNetImporter(WORDNET).build(settings, "law")


def test_the_shipped_selection_needs_the_real_database(settings):
    with pytest.raises(SourceUnavailable, match="WordNet has no synset"):
        WordNetImporter(WORDNET).build(settings, "medicine")


def test_common_words():
    assert common_words(min_count=3, system_dir=WORDNET) == frozenset(
        {"area", "court", "entity", "judge", "law", "legal", "tribunal"}
    )
    assert common_words(min_count=10, system_dir=WORDNET) == frozenset({"court", "law", "legal"})


def test_mark_ambiguous_names(settings):
    g = KnowledgeGraph("law")
    for nid, label, syns, source, attrs in [
        ("WN:court.n.01", "court", ("tribunal",), "wordnet", {}),
        ("WN:court.n.02", "court", ("courtyard",), "wordnet", {}),
        ("COURT:x", "court", ("appellate court",), "courts", {}),
        ("GCIDE:judge", "judge", (), "gcide-law", {}),
        ("FOLDOC:area", "area", ("law", "courts"), "foldoc", {}),
        ("GCIDE:tribunal", "tribunal", (), "gcide-law", {"nolink": True}),
        ("X:legal", "legal", (), "user", {}),
    ]:
        g.add_node(Node(nid, label, syns, "", "law", source, attrs))
    flagged = mark_ambiguous_names(settings, g, system_dir=WORDNET)
    minor = {n.id: list(n.attrs.get("minor", [])) for n in g.nodes()}
    assert minor == {
        "WN:court.n.01": [],  # the word's most frequent sense
        "WN:court.n.02": ["court"],  # 2 uses against 20: mostly means the tribunal
        "COURT:x": ["court"],  # a common word in a strict source; phrases are never flagged
        "GCIDE:judge": ["judge"],  # mostly a verb
        "FOLDOC:area": ["law", "courts"],  # synonyms that are common words (stemmed: courts -> court)
        "GCIDE:tribunal": [],  # never linked anyway
        "X:legal": ["legal"],  # most frequent sense is an adjective
    }
    assert flagged == 6
