"""Finance sources besides WordNet: the GnuCash glossary (Debian ``gnucash-docs``, if reachable)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from kg.errors import GraphFormatError, SourceUnavailable
from kg.importers.base import Fragment, Importer, debian_version

if TYPE_CHECKING:
    from core.settings import Settings

GLOSSARY_MEMBER = "usr/share/help/C/gnucash-guide/gnc-glossary.xml"
# DocBook entities the glossary uses (defined in a DTD we do not read)
_ENTITIES = {
    "app": "GnuCash",
    "lin": "Linux",
    "mac": "macOS",
    "win": "Windows",
    "url-wp-en": "https://en.wikipedia.org/wiki/",
}
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}
_ENTITY = re.compile(r"&([A-Za-z][\w.-]*);")


def _find_glossary(settings: Settings) -> Path:
    """The installed glossary, or one extracted from a ``gnucash-docs`` .deb (``QSEF_GNUCASH_DEB`` or apt's cache)."""
    installed = Path("/") / GLOSSARY_MEMBER
    if installed.is_file():
        return installed
    from kg.storage import user_dir

    cached = user_dir(settings) / "sources" / "gnc-glossary.xml"
    if cached.is_file():
        return cached
    corpora_copy = settings.home / "corpora" / "assets" / "debs" / "gnucash-docs" / GLOSSARY_MEMBER
    if corpora_copy.is_file():  # extracted by `qsef corpora ensure-assets`
        return corpora_copy
    debs = [Path(os.environ["QSEF_GNUCASH_DEB"])] if os.environ.get("QSEF_GNUCASH_DEB") else []
    debs += sorted(Path("/var/cache/apt/archives").glob("gnucash-docs_*.deb"))
    for deb in debs:
        if deb.is_file():
            with tempfile.TemporaryDirectory() as tmp:
                tar = subprocess.run(
                    ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
                ).stdout
                subprocess.run(
                    ["tar", "-x", "-C", tmp, f"./{GLOSSARY_MEMBER}"],
                    input=tar,
                    check=True,
                    capture_output=True,
                )
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes((Path(tmp) / GLOSSARY_MEMBER).read_bytes())
            return cached
    raise SourceUnavailable(
        "GnuCash glossary not found: apt-get install gnucash-docs, or `apt-get download gnucash-docs` and set "
        "QSEF_GNUCASH_DEB to the .deb (145 MB)"
    )


def _slash_variants(term: str) -> list[str]:
    """``Capital Gain/Loss`` -> ``Capital Gain``, ``Capital Loss``."""
    if "/" not in term:
        return []
    first, *alts = (p.strip() for p in term.split("/"))
    words = first.split()
    out = [first]
    for alt in alts:
        out.append(" ".join([*words[:-1], alt]) if len(alt.split()) == 1 and len(words) > 1 else alt)
    return out


class GnuCashImporter(Importer):
    name = "gnucash"
    title = "GnuCash Tutorial and Concepts Guide glossary (Debian gnucash-docs)"
    licence = "GFDL 1.1 or later (GnuCash documentation)"
    url = "https://www.gnucash.org/docs.phtml"
    domains = ("finance",)
    install_hint = "apt-get install gnucash-docs"

    def build(self, settings: Settings, domain: str) -> Fragment:
        path = _find_glossary(settings)
        text = path.read_text(encoding="utf-8")
        text = _ENTITY.sub(
            lambda m: _ENTITIES.get(m.group(1), m.group(0) if m.group(1) in _XML_ENTITIES else m.group(1)),
            text,
        )
        text = "\n".join(line for line in text.splitlines() if not line.startswith("<!DOCTYPE"))
        try:
            root_el = ET.fromstring(text)
        except ET.ParseError as exc:
            raise GraphFormatError(path, exc.position[0], f"invalid XML: {exc}") from exc
        frag = self.fragment(version=debian_version("gnucash-docs"), file=GLOSSARY_MEMBER)
        root = "GNUCASH:root"
        frag.node(
            root, "accounting term", ("bookkeeping term",), "Terms of the GnuCash glossary.", nolink=True
        )
        frag.roots.append(root)
        frag.edge(root, "is_a", "WN:accounting.n.02")
        ids: dict[str, str] = {}
        entries = []
        for entry in root_el.iter("glossentry"):
            term = (
                " ".join("".join(entry.find("glossterm").itertext()).split())
                if entry.find("glossterm") is not None
                else ""
            )
            if not term:
                continue
            gdef = entry.find("glossdef")
            paras = (
                [" ".join("".join(p.itertext()).split()) for p in gdef.findall("para")]
                if gdef is not None
                else []
            )
            see = [s.get("otherterm", "") for s in gdef.iter("glossseealso")] if gdef is not None else []
            nid = f"GNUCASH:{term.lower()}"
            ids[entry.get("id", "")] = nid
            syns = _slash_variants(term)
            entries.append((nid, term, syns, " ".join(paras), see))
        for nid, term, syns, definition, _see in entries:
            frag.node(nid, term, syns, definition)
            frag.edge(nid, "is_a", root)
        for nid, _term, _syns, _definition, see in entries:
            for other in see:
                if other in ids:
                    frag.edge(nid, "see_also", ids[other])
        return frag
