"""kg.importers.law: US courts, licence categories and GCIDE law/finance entries on tiny fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kg.errors import GraphFormatError, SourceUnavailable
from kg.importers import law
from kg.importers.law import CourtsImporter, GcideFinanceImporter, GcideLawImporter, LicensesImporter

FIXTURES = Path(__file__).parent / "fixtures"

COURTS = ("courts_db", "data/courts.json")
LICENCES = ("license_expression", "data/scancode-licensedb-index.json")


def _nodes(frag):
    return {n.id: n for n in frag.nodes}


def _triples(frag):
    return {e.triple for e in frag.edges}


@pytest.fixture
def courts(settings, serve_package_file):
    asked = serve_package_file(law, {COURTS: FIXTURES / "courts.json"})
    frag = CourtsImporter().build(settings, "law")
    assert asked == [COURTS]
    return frag


def test_courts_become_nodes(courts):
    nodes = _nodes(courts)
    mad = nodes["COURT:mad"]
    assert mad.label == "District Court, D. Massachusetts"
    assert mad.synonyms == ("D. Mass.",)
    assert mad.definition == "Federal trial court in Massachusetts."
    assert mad.attrs == {"jurisdiction": "M.A.", "level": "gjc"}
    assert nodes["COURT:scotus"].synonyms == ("SCOTUS",)
    assert nodes["COURT:ca1"].synonyms == ("1st Cir.",)
    assert nodes["COURT:nysupct"].synonyms == ()  # "NY" is too short to link
    assert nodes["COURT:usdistct"].synonyms == ()
    assert nodes["COURT:nysupct"].definition == "State other court in New York."


def test_court_relations(courts):
    triples = _triples(courts)
    assert ("COURT:mad", "part_of", "COURT:usdistct") in triples
    assert ("COURT:mad", "instance_of", "COURT-TYPE:federal-trial") in triples
    assert ("COURT:ca1", "related", "COURT:scotus") in triples  # appeal_to as a list
    assert not any(e.head == "COURT:nysupct" and e.relation == "part_of" for e in courts.edges)  # unknown parent


def test_court_appeal_to_given_as_one_id(courts):
    """courts.json mostly writes ``"appeal_to": "ca1"`` (a string, not a list of ids)."""
    triples = _triples(courts)
    assert ("COURT:mad", "related", "COURT:ca1") in triples
    assert not any(e.head == "COURT:usdistct" and e.relation == "related" for e in courts.edges)  # not an id


def test_court_types_hang_under_the_court_root(courts):
    nodes, triples = _nodes(courts), _triples(courts)
    types = {i for i in nodes if i.startswith("COURT-TYPE:")}
    assert types == {"COURT-TYPE:federal-appellate", "COURT-TYPE:federal-trial", "COURT-TYPE:state-other"}
    assert nodes["COURT-TYPE:federal-trial"].label == "federal trial court"
    assert nodes["COURT-TYPE:state-other"].label == "state court"
    assert all((t, "is_a", "COURT:root") in triples for t in types)
    assert ("COURT:root", "is_a", "WN:court.n.01") in triples
    assert courts.roots == ["COURT:root"]


def test_courts_provenance(courts):
    assert courts.provenance["file"] == "courts_db/data/courts.json"
    assert courts.provenance["package"].startswith("courts-db ")
    assert courts.provenance["licence"].startswith("BSD-2-Clause")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "scotus"}', r"courts\.json:1: expected a JSON list of courts"),
        ('[{"id": "scotus",\n "name": }]', r"courts\.json:2: invalid JSON"),
        ('[{"id": "scotus", "name": "Supreme Court"}, {"id": "ca1"}]', r"court #1 lacks an id or a name"),
    ],
)
def test_malformed_courts_file(settings, serve_package_file, tmp_path, text, message):
    path = tmp_path / "courts.json"
    path.write_text(text)
    serve_package_file(law, {COURTS: path})
    with pytest.raises(GraphFormatError, match=message):
        CourtsImporter().build(settings, "law")


def test_courts_not_installed(settings, monkeypatch):
    def missing(settings, package, relative, *, hint):
        raise SourceUnavailable(f"{package}/{relative} not found; {hint}")

    monkeypatch.setattr(law, "package_file", missing)
    with pytest.raises(SourceUnavailable, match="pip install courts-db"):
        CourtsImporter().build(settings, "law")


@pytest.fixture
def licences(settings, serve_package_file):
    asked = serve_package_file(law, {LICENCES: FIXTURES / "scancode-licensedb-index.json"})
    frag = LicensesImporter().build(settings, "law")
    assert asked == [LICENCES]
    return frag


def test_licences_are_labelled_by_spdx_key(licences):
    nodes = _nodes(licences)
    gpl = nodes["LICENSE:gpl-2.0-plus"]
    assert gpl.label == "GPL-2.0-or-later"
    assert gpl.synonyms == ("gpl-2.0-plus", "GPL-2.0+", "GPL 2.0+")
    assert gpl.definition == "Copyleft licence (ScanCode key gpl-2.0-plus)."
    assert gpl.attrs == {"category": "Copyleft", "deprecated": False}
    assert nodes["LICENSE:mit"].synonyms == ("mit", "LicenseRef-MIT-Bootstrap")
    # a LicenseRef- key is no name: the ScanCode key is the label
    assert nodes["LICENSE:acme-eula"].label == "acme-eula"
    assert nodes["LICENSE:acme-eula"].attrs["deprecated"] is True
    assert nodes["LICENSE:classpath-exception-2.0"].definition.startswith("Copyleft Limited licence exception")
    assert nodes["LICENSE:unknown-text"].attrs["category"] == "Unstated License"


def test_licence_categories(licences):
    nodes, triples = _nodes(licences), _triples(licences)
    assert ("LICENSE:mit", "instance_of", "LICENSE-CATEGORY:permissive") in triples
    assert nodes["LICENSE-CATEGORY:permissive"].label == "Permissive licence"
    assert nodes["LICENSE-CATEGORY:unstated license"].label == "Unstated License"
    cats = [i for i in nodes if i.startswith("LICENSE-CATEGORY:")]
    assert len(cats) == 5
    assert all((c, "is_a", "LICENSE:root") in triples for c in cats)
    assert ("LICENSE:root", "is_a", "WN:license.n.01") in triples
    assert licences.provenance["file"] == "license_expression/data/scancode-licensedb-index.json"


def test_licence_without_a_key(settings, serve_package_file, tmp_path):
    path = tmp_path / "index.json"
    path.write_text(json.dumps([{"license_key": "mit"}, {"category": "Permissive"}]))
    serve_package_file(law, {LICENCES: path})
    with pytest.raises(GraphFormatError, match=r"licence #1 lacks a license_key"):
        LicensesImporter().build(settings, "law")


def test_licences_file_not_a_list(settings, serve_package_file, tmp_path):
    path = tmp_path / "index.json"
    path.write_text('{"mit": {}}')
    serve_package_file(law, {LICENCES: path})
    with pytest.raises(GraphFormatError, match=r"expected a JSON list of licences"):
        LicensesImporter().build(settings, "law")


@pytest.fixture
def gcide(dictd_db):
    return dictd_db("gcide")


def test_gcide_law_takes_the_law_labelled_senses(settings, gcide):
    frag = GcideLawImporter(*gcide).build(settings, "law")
    nodes = _nodes(frag)
    assert set(nodes) == {
        "GCIDE:root",
        "GCIDE:tort",
        "GCIDE:tort feasor",
        "GCIDE:trespass",
        "GCIDE:bailment",
        "GCIDE:frankpledge",
        "GCIDE:heir at law",
        "GCIDE:heir presumptive",
    }
    # the (Law) sense, not "Mischief; injury; calamity" nor the adjective entry
    assert nodes["GCIDE:tort"].definition.startswith("Any civil wrong or injury; a wrongful act")
    assert nodes["GCIDE:tort feasor"].label == "Tort feasor"  # a "{Term} (Law), ..." collocation
    assert nodes["GCIDE:tort feasor"].definition == "a wrongdoer; a trespasser."  # author citation removed
    assert nodes["GCIDE:frankpledge"].definition == "A pledge or surety for the good behavior of freemen."
    assert nodes["GCIDE:bailment"].definition == "The action of bailing a person accused."  # first sense wins
    assert frag.provenance["entries"] == 7


def test_gcide_collocation_after_a_see_under_line(settings, gcide):
    """In "{Heir apparent}. See under {Apparent}.\n\n{Heir at law} (Law), one who, ..." the (Law)
    definition belongs to "Heir at law", not to the headword "Heir" (which has no law sense)."""
    nodes = _nodes(GcideLawImporter(*gcide).build(settings, "law"))
    assert "GCIDE:heir" not in nodes
    heir_at_law = nodes["GCIDE:heir at law"]
    assert heir_at_law.label == "Heir at law"
    assert heir_at_law.definition == (
        "one who, after his ancestor's death, has a right to inherit all his intestate estate."
    )
    # "{Term}.\n (a) ... (b) (Law) ...": the name is on the paragraph's first line
    assert nodes["GCIDE:heir presumptive"].definition == (
        "One whose right of inheritance may be defeated by the birth of a nearer relative."
    )


def test_gcide_law_skips_short_definitions_and_other_subjects(settings, gcide):
    ids = {n.id for n in GcideLawImporter(*gcide).build(settings, "law").nodes}
    assert "GCIDE:nul" not in ids  # "(Law) No." is too short to be a definition
    assert "GCIDE:dividend" not in ids  # (Com.)


def test_gcide_law_relations(settings, gcide):
    frag = GcideLawImporter(*gcide).build(settings, "law")
    triples = _triples(frag)
    assert ("GCIDE:tort", "see_also", "GCIDE:trespass") in triples
    assert ("GCIDE:trespass", "see_also", "GCIDE:tort") in triples
    assert ("GCIDE:root", "is_a", "WN:law.n.01") in triples
    assert all((i, "is_a", "GCIDE:root") in triples for i in _nodes(frag) if i != "GCIDE:root")
    assert frag.roots == ["GCIDE:root"]


def test_gcide_finance_uses_its_own_labels_and_namespace(settings, gcide):
    frag = GcideFinanceImporter(*gcide).build(settings, "finance")
    nodes = _nodes(frag)
    assert set(nodes) == {"GCIDE-FIN:root", "GCIDE-FIN:dividend", "GCIDE-FIN:bank"}
    assert nodes["GCIDE-FIN:bank"].definition.startswith("An establishment for the custody, loan")
    assert ("GCIDE-FIN:bank", "see_also", "GCIDE-FIN:dividend") in _triples(frag)
    assert ("GCIDE-FIN:root", "is_a", "WN:commerce.n.01") in _triples(frag)
    assert frag.source == "gcide-finance"


def test_gcide_missing(settings, tmp_path):
    with pytest.raises(SourceUnavailable, match=r"gcide\.index is missing; apt-get install dict-gcide"):
        GcideLawImporter(tmp_path / "gcide.index", tmp_path / "gcide.dict.dz").build(settings, "law")
