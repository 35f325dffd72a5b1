"""Code sources: the Free On-line Dictionary of Computing (Debian ``dict-foldoc``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from kg.importers import dictd
from kg.importers.base import Fragment, Importer, debian_version, system_file

if TYPE_CHECKING:
    from core.settings import Settings

FOLDOC_INDEX = "/usr/share/dictd/foldoc.index"
FOLDOC_DICT = "/usr/share/dictd/foldoc.dict.dz"

_TAG = re.compile(r"^[ \t]*(?:\d+\.[ \t]*)?<([a-z][a-z0-9 ,/&'-]{1,60})>", re.MULTILINE)
_LINK = re.compile(r"\{([^{}]+)\}")
_DATE = re.compile(r"\(\d{4}-\d{2}-\d{2}\)\s*$")


_URL = re.compile(r"\s*\((?:https?|ftp|telnet|news|mailto):[^()]*\)|\s*<[^<>@\s]+@[^<>\s]+>")


def clean_body(text: str) -> str:
    """An entry body as plain prose: URLs and e-mail addresses dropped, ``{cross links}`` reduced to
    their labels, ``<subject tags>`` removed, whitespace squashed."""
    text = _URL.sub("", text)
    text = _LINK.sub(lambda m: m.group(1).split(" (")[0], text)
    text = _TAG.sub("", text)
    return " ".join(text.split())


def slug(label: str) -> str:
    return "FOLDOC:" + " ".join(label.lower().split())


def parse_foldoc_entry(text: str) -> tuple[list[str], str, list[str], list[str]]:
    """Split an entry into (headword lines, body, subject tags, cross-link targets)."""
    lines = text.split("\n")
    heads: list[str] = []
    i = 0
    while i < len(lines) and lines[i] and not lines[i][0].isspace():
        heads.append(lines[i].strip())
        i += 1
    body = "\n".join(lines[i:]).strip()
    body = _DATE.sub("", body).strip()
    tags: list[str] = []
    for m in _TAG.finditer(body):
        tags.extend(t.strip().lower() for t in m.group(1).split(",") if t.strip())
    links = []
    for m in _LINK.finditer(body):
        target = " ".join(m.group(1).split())
        if "(" in target and ("http" in target or ".html" in target or "://" in target):
            continue  # external URL
        links.append(target)
    return heads, body, list(dict.fromkeys(tags)), links


class FoldocImporter(Importer):
    name = "foldoc"
    title = "The Free On-line Dictionary of Computing (Debian dict-foldoc)"
    licence = "GFDL 1.1 or later (FOLDOC, Denis Howe)"
    url = "https://foldoc.org/"
    domains = ("code",)
    install_hint = "apt-get install dict-foldoc (listed in deps/apt.txt)"

    def __init__(self, index: str | Path = FOLDOC_INDEX, dict_file: str | Path = FOLDOC_DICT) -> None:
        self.index, self.dict_file = index, dict_file

    def build(self, settings: Settings, domain: str) -> Fragment:
        index = system_file(str(self.index), hint=self.install_hint)
        data = system_file(str(self.dict_file), hint=self.install_hint)
        frag = self.fragment(version=debian_version("dict-foldoc"), file=str(data))
        # not FOLDOC:root, the id of FOLDOC's own entry "root" (the superuser)
        root = "FOLDOC-SUBJECT:root"
        frag.node(root, "computing", ("computing",), "Root of the FOLDOC subject tags.", nolink=True)
        frag.roots.append(root)
        parsed = []
        alias: dict[str, str] = {}  # lower-case name -> node id
        for _words, text in dictd.entries(index, data):
            heads, body, tags, links = parse_foldoc_entry(text)
            if not heads or not body or "spelling" in tags:
                continue
            label = heads[0]
            nid = slug(label)
            parsed.append((nid, label, heads[1:], body, tags, links))
            for name in [label, *heads[1:]]:
                alias.setdefault(name.lower(), nid)
        redirect: dict[str, str] = {}
        seen: set[str] = set()
        tag_ids: dict[str, str] = {}
        for nid, label, others, body, tags, links in parsed:
            cleaned = clean_body(body)
            # an entry whose body is only a cross-reference is another name for the target
            if not tags and len(links) == 1 and len(cleaned) <= len(links[0]) + 2:
                redirect[nid] = links[0].lower()
                continue
            if nid in seen:
                continue
            seen.add(nid)
            frag.node(nid, label, others, cleaned)
            for tag in tags:
                tid = tag_ids.setdefault(tag, f"FOLDOC-SUBJECT:{tag}")
                frag.edge(nid, "in_domain", tid)
            for target in links:
                tid = alias.get(target.lower())
                if tid and tid != nid:
                    frag.edge(nid, "see_also", tid)
        # redirects become synonyms of their targets
        extra: dict[str, list[str]] = {}
        for nid, target in redirect.items():
            tid = alias.get(target)
            if tid and tid in seen:
                extra.setdefault(tid, []).append(nid.split(":", 1)[1])
        if extra:
            frag.nodes = [
                n
                if n.id not in extra
                else type(n)(
                    n.id,
                    n.label,
                    tuple(dict.fromkeys((*n.synonyms, *extra[n.id]))),
                    n.definition,
                    n.domain,
                    n.source,
                    n.attrs,
                )
                for n in frag.nodes
            ]
        for tag, tid in tag_ids.items():
            frag.node(tid, tag, (), f"FOLDOC subject tag <{tag}>.", subject=True, nolink=True)
            frag.edge(tid, "is_a", root)
        # see_also edges to redirects point at the redirect target
        frag.edges = [
            e
            if e.tail in seen or not e.tail.startswith("FOLDOC:")
            else type(e)(e.head, e.relation, alias.get(redirect.get(e.tail, ""), e.tail), e.source)
            for e in frag.edges
        ]
        frag.edges = [
            e
            for e in frag.edges
            if e.head != e.tail and (e.tail in seen or e.tail.startswith("FOLDOC-SUBJECT:"))
        ]
        frag.provenance["entries"] = len(seen)
        frag.provenance["subjects"] = len(tag_ids)
        return frag
