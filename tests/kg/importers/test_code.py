"""kg.importers.code: FOLDOC entries (tags, cross-links, redirects) on a tiny dictd database."""

from __future__ import annotations

import pytest

from kg.errors import SourceUnavailable
from kg.importers.code import FoldocImporter, clean_body, parse_foldoc_entry, slug


def test_parse_foldoc_entry_splits_heads_body_tags_and_links():
    text = (
        "recursion\nrecursive\n\n   <mathematics, programming> When a {function} calls itself;\n"
        "   see {tail\n   recursion} or {FOLDOC (http://foldoc.org/)}.\n\n   (2006-04-16)\n\n"
    )
    heads, body, tags, links = parse_foldoc_entry(text)
    assert heads == ["recursion", "recursive"]
    assert not body.endswith("(2006-04-16)")
    assert tags == ["mathematics", "programming"]
    assert links == ["function", "tail recursion"]  # whitespace squashed, external URL dropped


def test_parse_foldoc_entry_reads_numbered_tags():
    _, _, tags, _ = parse_foldoc_entry("CPU\n\n   1. <hardware> The processor.\n\n   2. <jargon> A brain.\n")
    assert tags == ["hardware", "jargon"]


def test_clean_body_keeps_prose_only():
    body = "<language> A {functional (language)} language (http://www.lisp.org/) by <a@b.org>."
    assert clean_body(body) == "A functional language by."


def test_slug_folds_case_and_spaces():
    assert slug("Tail  Recursion") == "FOLDOC:tail recursion"


@pytest.fixture
def foldoc(dictd_db, settings):
    index, data = dictd_db("foldoc")
    return FoldocImporter(index, data).build(settings, "code")


def test_entries_become_nodes_with_their_other_headwords(foldoc):
    nodes = {n.id: n for n in foldoc.nodes}
    assert nodes["FOLDOC:recursion"].label == "recursion"
    assert nodes["FOLDOC:recursion"].synonyms == ("recursive",)
    assert nodes["FOLDOC:recursion"].definition == "When a function (or procedure) calls itself. See tail recursion."
    assert nodes["FOLDOC:lisp"].definition.startswith("LISt Processing language. A functional, recursive language")
    assert "http" not in nodes["FOLDOC:lisp"].definition and "@" not in nodes["FOLDOC:lisp"].definition
    assert all(n.source == "foldoc" for n in foldoc.nodes)


def test_skipping_rules(foldoc):
    ids = {n.id for n in foldoc.nodes}
    assert "FOLDOC:cypher" not in ids  # <spelling> entries
    assert "FOLDOC:orphan" not in ids  # no body
    assert "FOLDOC:tail-recursive" not in ids  # a body that is only a cross-reference
    # person entries are kept in the graph, tagged (corpora.sources drops them from text corpora)
    assert ("FOLDOC:denis howe", "in_domain", "FOLDOC-SUBJECT:person") in {e.triple for e in foldoc.edges}


def test_the_first_entry_of_a_name_wins(foldoc):
    (lisp,) = [n for n in foldoc.nodes if n.id == "FOLDOC:lisp"]
    assert lisp.label == "Lisp"  # the later "LISP" entry folds onto the same id and is dropped
    assert "second entry" not in lisp.definition


def test_redirects_become_synonyms_and_links_follow_them(foldoc):
    nodes = {n.id: n for n in foldoc.nodes}
    assert nodes["FOLDOC:tail recursion"].synonyms == ("tail-recursive",)
    triples = {e.triple for e in foldoc.edges}
    assert ("FOLDOC:lisp", "see_also", "FOLDOC:tail recursion") in triples  # {tail-recursive} resolved
    assert ("FOLDOC:lisp", "see_also", "FOLDOC:recursion") in triples  # {recursive}: another headword
    assert ("FOLDOC:recursion", "see_also", "FOLDOC:tail recursion") in triples


def test_links_to_missing_entries_are_dropped(foldoc):
    ids = {n.id for n in foldoc.nodes}
    assert all(e.head in ids and e.tail in ids for e in foldoc.edges)  # {function}, {procedure}, {cipher} absent


def test_subject_tags_hang_under_the_root(foldoc):
    nodes = {n.id: n for n in foldoc.nodes}
    triples = {e.triple for e in foldoc.edges}
    subjects = {i for i in nodes if i.startswith("FOLDOC-SUBJECT:") and i != "FOLDOC-SUBJECT:root"}
    tags = ("language", "mathematics", "programming", "person", "operating system")
    assert subjects == {f"FOLDOC-SUBJECT:{t}" for t in tags}
    for sid in subjects:
        assert nodes[sid].attrs == {"subject": True, "nolink": True}
        assert (sid, "is_a", "FOLDOC-SUBJECT:root") in triples
    assert ("FOLDOC:recursion", "in_domain", "FOLDOC-SUBJECT:mathematics") in triples
    assert foldoc.roots == ["FOLDOC-SUBJECT:root"]
    assert nodes["FOLDOC-SUBJECT:root"].attrs == {"nolink": True}


def test_the_entry_root_is_not_the_synthetic_root(foldoc):
    """FOLDOC has an entry "root" (the superuser): it keeps its own node, label and links."""
    (entry,) = [n for n in foldoc.nodes if n.id == "FOLDOC:root"]
    assert entry.label == "root"
    assert entry.definition.startswith("The superuser account on Unix")
    assert not entry.attrs.get("nolink")
    assert ("FOLDOC:root", "in_domain", "FOLDOC-SUBJECT:operating system") in {e.triple for e in foldoc.edges}
    assert len({n.id for n in foldoc.nodes}) == len(foldoc.nodes)  # no id defined twice


def test_provenance_counts(foldoc):
    assert foldoc.provenance["entries"] == 5  # Lisp, recursion, tail recursion, Denis Howe, root
    assert foldoc.provenance["subjects"] == 5
    assert foldoc.provenance["file"].endswith("foldoc.dict.dz")
    assert foldoc.provenance["licence"].startswith("GFDL")


def test_missing_database_says_how_to_install(settings, tmp_path):
    importer = FoldocImporter(tmp_path / "foldoc.index", tmp_path / "foldoc.dict.dz")
    with pytest.raises(SourceUnavailable, match=r"foldoc\.index is missing; apt-get install dict-foldoc"):
        importer.build(settings, "code")
