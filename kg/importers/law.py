"""Law sources: US courts (courts-db), licence categories (license-expression), GCIDE law-labelled entries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from kg.errors import GraphFormatError
from kg.importers import dictd
from kg.importers.base import Fragment, Importer, debian_version, package_file, package_version, system_file

if TYPE_CHECKING:
    from core.settings import Settings

COURT_CONCEPT = "WN:court.n.01"  # "an assembly (including one or more judges) to conduct judicial business"
LICENCE_CONCEPT = "WN:license.n.01"


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GraphFormatError(path, exc.lineno, f"invalid JSON: {exc.msg}") from exc


class CourtsImporter(Importer):
    name = "courts"
    title = "US courts and their hierarchy (courts-db wheel, courts.json)"
    licence = "BSD-2-Clause (Free Law Project)"
    url = "https://github.com/freelawproject/courts-db"
    domains = ("law",)
    install_hint = "pip install courts-db"

    def build(self, settings: Settings, domain: str) -> Fragment:
        path = package_file(settings, "courts_db", "data/courts.json", hint=self.install_hint)
        courts = _load_json(path)
        if not isinstance(courts, list):
            raise GraphFormatError(path, 1, "expected a JSON list of courts")
        frag = self.fragment(
            package=f"courts-db {package_version('courts-db')}", file="courts_db/data/courts.json"
        )
        root = "COURT:root"
        frag.node(root, "court", ("court of law", "lawcourt"), "A body that conducts judicial business.")
        frag.roots.append(root)
        frag.edge(root, "is_a", COURT_CONCEPT)
        known = {c["id"] for c in courts if isinstance(c, dict) and c.get("id")}
        kinds: set[tuple[str, str]] = set()
        for i, c in enumerate(courts):
            if not isinstance(c, dict) or not c.get("id") or not c.get("name"):
                raise GraphFormatError(path, 0, f"court #{i} lacks an id or a name")
            nid = f"COURT:{c['id']}"
            syns = [s for s in (c.get("name_abbreviation"), c.get("citation_string")) if s and len(s) > 3]
            system = (c.get("system") or "other").strip() or "other"
            kind = (c.get("type") or "other").strip() or "other"
            loc = c.get("location") or ""
            definition = f"{system.capitalize()} {kind} court" + (f" in {loc}" if loc else "") + "."
            frag.node(
                nid,
                c["name"],
                syns,
                definition,
                jurisdiction=c.get("jurisdiction") or "",
                level=c.get("level") or "",
            )
            kinds.add((system, kind))
            frag.edge(nid, "instance_of", f"COURT-TYPE:{system}-{kind}")
            parent = c.get("parent")
            if parent and parent in known:
                frag.edge(nid, "part_of", f"COURT:{parent}")
            appeal = c.get("appeal_to") or []  # courts.json holds one id, or (once) a list of ids
            for target in [appeal] if isinstance(appeal, str) else appeal:
                if isinstance(target, str) and target in known:
                    frag.edge(nid, "related", f"COURT:{target}")
        for system, kind in sorted(kinds):
            label = f"{system} {kind} court" if kind != "other" else f"{system} court"
            frag.node(
                f"COURT-TYPE:{system}-{kind}", label, (), f"Courts of the {system} system of type {kind}."
            )
            frag.edge(f"COURT-TYPE:{system}-{kind}", "is_a", root)
        return frag


class LicensesImporter(Importer):
    name = "licenses"
    title = "Software licence keys and categories (license-expression wheel, ScanCode LicenseDB index)"
    licence = "CC-BY-4.0 (ScanCode LicenseDB data); Apache-2.0 (package)"
    url = "https://scancode-licensedb.aboutcode.org/"
    domains = ("law",)
    install_hint = "pip install license-expression"

    def build(self, settings: Settings, domain: str) -> Fragment:
        path = package_file(settings,
            "license_expression", "data/scancode-licensedb-index.json", hint=self.install_hint
        )
        rows = _load_json(path)
        if not isinstance(rows, list):
            raise GraphFormatError(path, 1, "expected a JSON list of licences")
        frag = self.fragment(
            package=f"license-expression {package_version('license-expression')}",
            file="license_expression/data/scancode-licensedb-index.json",
        )
        root = "LICENSE:root"
        frag.node(
            root,
            "software licence",
            ("software license", "open source license", "free software licence"),
            "A legal instrument governing the use or redistribution of software.",
        )
        frag.roots.append(root)
        frag.edge(root, "is_a", LICENCE_CONCEPT)
        cats: set[str] = set()
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or not r.get("license_key"):
                raise GraphFormatError(path, 0, f"licence #{i} lacks a license_key")
            key = r["license_key"]
            spdx = r.get("spdx_license_key") or ""
            label = spdx if spdx and not spdx.startswith("LicenseRef-") else key
            syns = [key, *(r.get("other_spdx_license_keys") or [])]
            cat = r.get("category") or "Unstated License"
            cats.add(cat)
            kind = "licence exception" if r.get("is_exception") else "licence"
            frag.node(
                f"LICENSE:{key}",
                label,
                syns,
                f"{cat} {kind} (ScanCode key {key}).",
                category=cat,
                deprecated=bool(r.get("is_deprecated")),
            )
            frag.edge(f"LICENSE:{key}", "instance_of", f"LICENSE-CATEGORY:{cat.lower()}")
        for cat in sorted(cats):
            label = cat if "licen" in cat.lower() else f"{cat} licence"
            frag.node(f"LICENSE-CATEGORY:{cat.lower()}", label, (), f"ScanCode licence category '{cat}'.")
            frag.edge(f"LICENSE-CATEGORY:{cat.lower()}", "is_a", root)
        return frag


GCIDE_INDEX = "/usr/share/dictd/gcide.index"
GCIDE_DICT = "/usr/share/dictd/gcide.dict.dz"
_LAW_LABEL = re.compile(r"\((?:[A-Z][A-Za-z]*\.?\s)*Law\)")
_FINANCE_LABEL = re.compile(
    r"\((?:Com|Polit\. Econ|Econ|Finance|Banking|Stock Exchange|Stock Exch|Bookkeeping|Insurance)\.?\)"
)
_BLOCK_END = re.compile(r"\[(?:1913 Webster|Webster 1913 Suppl\.|PJC|Century Dict\.|WordNet 1\.5)[^\]]*\]")
_BRACED = re.compile(r"\{([^{}]*)\}")
_MARKUP = re.compile(r"\[[=.^~`'\"a-z]{1,6}\]")


def _gcide_text(s: str) -> str:
    s = _MARKUP.sub("", s)
    s = _BRACED.sub(lambda m: m.group(1), s)
    s = re.sub(r"--\s*[A-Z][^.\n]*\.", "", s)  # author citations
    s = re.sub(r"\[(?:Obs|R|Colloq|Eng|U\. S)\.?\]", "", s)
    s = re.sub(r"^\s*\d+\.\s*", "", s)
    s = re.sub(r"\s*\([a-z]\)\s*", " ", s)
    return " ".join(s.split()).strip(" ,;:")


class GcideImporter(Importer):
    """Entries of the GCIDE dictionary whose sense carries one of the domain's subject labels."""

    title = "GCIDE (Webster 1913 + supplements) (Debian dict-gcide)"
    licence = "GPL-3.0-or-later (GCIDE)"
    url = "https://gcide.gnu.org.ua/"
    install_hint = "apt-get install dict-gcide (listed in deps/apt.txt)"
    label_re: re.Pattern[str]
    root_label: str
    root_synonyms: tuple[str, ...]
    root_parent: str
    prefix: str

    def __init__(self, index: str | Path = GCIDE_INDEX, dict_file: str | Path = GCIDE_DICT) -> None:
        self.index, self.dict_file = index, dict_file

    def build(self, settings: Settings, domain: str) -> Fragment:
        index = system_file(str(self.index), hint=self.install_hint)
        data = system_file(str(self.dict_file), hint=self.install_hint)
        frag = self.fragment(
            version=debian_version("dict-gcide"), file=str(data), labels=self.label_re.pattern
        )
        root = f"{self.prefix}:root"
        frag.node(
            root,
            self.root_label,
            self.root_synonyms,
            "Root of the GCIDE entries with this domain's subject labels.",
            synthetic=True,
        )
        frag.roots.append(root)
        frag.edge(root, "is_a", self.root_parent)
        found: dict[str, tuple[str, list[str], str, list[str]]] = {}
        for _words, text in dictd.entries(index, data):
            first = text.split("\n", 1)[0]
            head = first.split(" \\", 1)[0].strip() if " \\" in first else first.split(",")[0].strip()
            if not head or not self.label_re.search(text):
                continue
            for block in _BLOCK_END.split(text):
                m = self.label_re.search(block)
                if not m:
                    continue
                before, after = block[: m.start()], block[m.end() :]
                refs = [r for r in _BRACED.findall(after) if r]
                # the paragraph the label closes; earlier ones may be other collocations' see-also lines
                stripped = before.strip().rsplit("\n\n", 1)[-1].strip()
                # a collocation: "{Term}, {Other term} (Law), definition" or "{Term}.\n (a) ... (b) (Law) ..."
                if stripped.startswith("{"):
                    names = [" ".join(n.split()) for n in _BRACED.findall(stripped.split("\n", 1)[0])]
                    if not names:
                        continue
                    label, syns = names[0], names[1:]
                else:
                    label, syns = head, []
                definition = _gcide_text(after)
                if len(definition) < 8 or not label or len(label) > 80:
                    continue
                key = label.lower()
                if key not in found:
                    found[key] = (label, syns, definition, refs)
        for key, (label, syns, definition, _refs) in found.items():
            frag.node(f"{self.prefix}:{key}", label, syns, definition)
            frag.edge(f"{self.prefix}:{key}", "is_a", root)
        for key, (_label, _syns, _definition, refs) in found.items():
            for r in refs:
                rk = " ".join(r.split()).lower()
                if rk in found and rk != key:
                    frag.edge(f"{self.prefix}:{key}", "see_also", f"{self.prefix}:{rk}")
        frag.provenance["entries"] = len(found)
        return frag


class GcideLawImporter(GcideImporter):
    name = "gcide-law"
    title = "GCIDE entries labelled (Law), (Eng. Law), (Scots Law), ... (Debian dict-gcide)"
    domains = ("law",)
    label_re = _LAW_LABEL
    root_label = "legal term"
    root_synonyms = ("law term", "term of law")
    root_parent = "WN:law.n.01"
    prefix = "GCIDE"


class GcideFinanceImporter(GcideImporter):
    name = "gcide-finance"
    title = "GCIDE entries labelled (Com.), (Polit. Econ.), (Finance), (Banking), (Stock Exchange), ... (Debian dict-gcide)"
    domains = ("finance",)
    label_re = _FINANCE_LABEL
    root_label = "commercial term"
    root_synonyms = ("business term", "financial term")
    root_parent = "WN:commerce.n.01"
    prefix = "GCIDE-FIN"
