"""kg.importers.finance: finding the GnuCash glossary and reading its DocBook entries."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kg.errors import GraphFormatError, SourceUnavailable
from kg.importers import finance
from kg.importers.finance import GnuCashImporter, _find_glossary, _slash_variants

FIXTURES = Path(__file__).parent / "fixtures"
# a member no system has installed, so the lookup falls through to the copies under the home
MEMBER = "usr/share/help/C/qsef-test-guide/gnc-glossary.xml"


@pytest.fixture
def no_installed_glossary(monkeypatch):
    monkeypatch.setattr(finance, "GLOSSARY_MEMBER", MEMBER)
    monkeypatch.delenv("QSEF_GNUCASH_DEB", raising=False)


@pytest.fixture
def cached(settings, no_installed_glossary) -> Path:
    """The fixture glossary where a previous extraction leaves it: ``$QSEF_HOME/kg/sources/``."""
    path = settings.home / "kg" / "sources" / "gnc-glossary.xml"
    path.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "gnc-glossary.xml", path)
    return path


@pytest.mark.parametrize(
    ("term", "variants"),
    [
        ("Capital Gain/Loss", ["Capital Gain", "Capital Loss"]),
        ("Debit/Credit", ["Debit", "Credit"]),
        ("Price Database/Price Editor", ["Price Database", "Price Editor"]),
        ("Account", []),
    ],
)
def test_slash_variants(term, variants):
    assert _slash_variants(term) == variants


def test_find_glossary_uses_the_cached_copy(settings, cached):
    assert _find_glossary(settings) == cached


def test_find_glossary_uses_the_corpora_copy(settings, no_installed_glossary):
    copy = settings.home / "corpora" / "assets" / "debs" / "gnucash-docs" / MEMBER
    copy.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "gnc-glossary.xml", copy)
    assert _find_glossary(settings) == copy


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build a .deb")
def test_find_glossary_extracts_it_from_a_deb_once(settings, no_installed_glossary, tmp_path, monkeypatch):
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: gnucash-docs\nVersion: 0.test\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test fixture\n"
    )
    (tree / MEMBER).parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "gnc-glossary.xml", tree / MEMBER)
    deb = tmp_path / "gnucash-docs_0.test_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(tree), str(deb)], check=True, capture_output=True)
    monkeypatch.setenv("QSEF_GNUCASH_DEB", str(deb))
    path = _find_glossary(settings)
    assert path == settings.home / "kg" / "sources" / "gnc-glossary.xml"
    assert path.read_bytes() == (FIXTURES / "gnc-glossary.xml").read_bytes()
    deb.unlink()
    assert _find_glossary(settings) == path  # the extracted copy is reused


def test_missing_glossary_says_how_to_get_it(settings, no_installed_glossary):
    if list(Path("/var/cache/apt/archives").glob("gnucash-docs_*.deb")):
        pytest.skip("apt's cache holds a gnucash-docs .deb")
    with pytest.raises(SourceUnavailable, match=r"apt-get install gnucash-docs.*QSEF_GNUCASH_DEB"):
        GnuCashImporter().build(settings, "finance")


@pytest.fixture
def glossary(settings, cached):
    return GnuCashImporter().build(settings, "finance")


def test_glossary_entries(glossary):
    nodes = {n.id: n for n in glossary.nodes}
    assert set(nodes) == {"GNUCASH:root", "GNUCASH:account", "GNUCASH:capital gain/loss", "GNUCASH:transaction"}
    account = nodes["GNUCASH:account"]
    assert account.label == "Account"
    # paragraphs joined, whitespace squashed, &app; expanded
    assert account.definition == (
        "An account keeps track of what you own, owe, spend or receive; GnuCash shows every account in a "
        "tree. Accounts can hold sub-accounts."
    )
    gain = nodes["GNUCASH:capital gain/loss"]
    assert gain.synonyms == ("Capital Gain", "Capital Loss")
    # known entities expanded, XML ones kept, unknown ones reduced to their name
    assert "https://en.wikipedia.org/wiki/Capital_gain & undefined-entity" in gain.definition


def test_glossary_relations(glossary):
    triples = {e.triple for e in glossary.edges}
    assert ("GNUCASH:account", "see_also", "GNUCASH:transaction") in triples
    assert ("GNUCASH:transaction", "see_also", "GNUCASH:account") in triples
    assert not any(e.head == "GNUCASH:capital gain/loss" and e.relation == "see_also" for e in glossary.edges)
    for nid in ("GNUCASH:account", "GNUCASH:capital gain/loss", "GNUCASH:transaction"):
        assert (nid, "is_a", "GNUCASH:root") in triples
    assert ("GNUCASH:root", "is_a", "WN:accounting.n.02") in triples
    assert glossary.roots == ["GNUCASH:root"]


def test_glossary_provenance(glossary):
    assert glossary.provenance["file"] == MEMBER
    assert glossary.provenance["licence"].startswith("GFDL")
    assert "version" in glossary.provenance


def test_malformed_glossary(settings, cached):
    cached.write_text('<?xml version="1.0"?>\n<glossary>\n<glossentry>\n</glossary>\n')
    with pytest.raises(GraphFormatError, match=r"gnc-glossary\.xml:4: invalid XML"):
        GnuCashImporter().build(settings, "finance")
