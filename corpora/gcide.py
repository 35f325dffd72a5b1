"""GCIDE (Debian ``dict-gcide``) reader: entries, their subject labels, and plain-text cleaning.

GCIDE is Webster's 1913 dictionary plus later additions, stored in dictd format: a gzip'd text
file (``gcide.dict.dz``) and an index of ``headword<TAB>offset<TAB>length`` with base64 numbers.
Senses carry subject labels such as ``(Law)``, ``(Eng. Law)``, ``(Com.)`` or ``(Computers)``; we use
them to pick domain entries, and take entries without any subject label as general vocabulary.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

DOMAIN_LABELS: dict[str, re.Pattern[str]] = {
    # "(Law)", "(Eng. Law)", "(O. Eng. Law)", "(Scots Law)", "(Civil Law)", ... but not "(Lawn Tennis)"
    "law": re.compile(r"\((?:[A-Z][A-Za-z]*\.? ?){0,3}Law\.?\)"),
    "finance": re.compile(
        r"\((?:Com|Commerce|Finance|Banking|Bookkeeping|Economics|Polit\. Econ|Stock Exchange|"
        r"Stock market|Life Insurance|Insurance|Accounting)\.?\)"
    ),
    "code": re.compile(r"\((?:Computers|Computer programming|Computer science|Computing)\.?\)"),
}
"""Subject labels that put a GCIDE sense into one of our domains."""

# any parenthesised subject label such as "(Zool.)", "(Naut.)", "(Old Eng. Law)"
_ANY_LABEL = re.compile(r"\((?:[A-Z][a-z]*\.? ?){1,4}\)")
_NON_SUBJECT_LABELS = {"(Fig.)", "(Colloq.)", "(Prov.)", "(Obs.)", "(R.)", "(E.)", "(L.)", "(Gr.)", "(F.)"}
_USAGE_MARKERS = re.compile(
    r"\[(?:Obs|R|Archaic|Prov\.? Eng|Scot|Colloq|Slang|Local|Dial|Low|Poetic)\.?[^\]]{0,20}\]"
)
_SENSE_START = re.compile(r"\n\s{2,}(?=\d{1,2}\.\s)")
_SOURCE_TAG = re.compile(r"\[(?:[^\[\]]*(?:Webster|PJC|WordNet|Century|Dict\.|Suppl\.)[^\[\]]*)\]")
_PRONUNCIATION = re.compile(r"\\[^\\\n]*\\")
_PHONETIC = re.compile(r"\((?:[^()\s]*\[[^()\s\]]{1,4}\][^()\s]*)+\)")
_CHAR_CODE = re.compile(
    r"(?<=[A-Za-z])\[([=^`'~.:]?)([a-zA-Z]{1,2})([=^`'~.:]?)\]|\[([=^`'~.:]?)([a-zA-Z]{1,2})([=^`'~.:]?)\](?=[A-Za-z])"
)
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_CITATION = re.compile(r"--\s?[A-Z][A-Za-z.,&' ]{0,50}?\.(?=\s|$)")


@dataclass(frozen=True, slots=True)
class GcideEntry:
    """One dictionary block: headword, byte offset (unique key) and raw text."""

    headword: str
    offset: int
    raw: str


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


@lru_cache(maxsize=2)
def read_entries(dict_path: str) -> tuple[GcideEntry, ...]:
    """All entry blocks of a dictd dictionary, in file order (cached per path)."""
    path = Path(dict_path)
    index = path.with_name(path.name.replace(".dict.dz", ".index"))
    data = gzip.decompress(path.read_bytes())
    blocks: dict[int, tuple[str, int]] = {}
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-"):
            continue
        offset, length = _b64(parts[1]), _b64(parts[2])
        blocks.setdefault(offset, (parts[0], length))
    entries = []
    for offset in sorted(blocks):
        word, length = blocks[offset]
        raw = data[offset : offset + length].decode("utf-8", errors="replace")
        head = raw.split("\\", 1)[0].split("\n", 1)[0].strip().rstrip(",")
        entries.append(GcideEntry(head or word, offset, raw))
    return tuple(entries)


def clean(raw: str) -> str:
    """Readable text of a GCIDE block: pronunciations, etymologies, source tags and citations removed."""
    t = _SOURCE_TAG.sub(" ", raw)
    t = _PRONUNCIATION.sub(" ", t)
    t = _PHONETIC.sub(" ", t)
    t = _CHAR_CODE.sub(lambda m: m.group(2) or m.group(5), t)
    t = t.replace("[ae]", "ae").replace("[oe]", "oe")
    for _ in range(3):  # etymologies can nest brackets
        t = _BRACKETS.sub(" ", t)
    t = re.sub(r"\{([^{}]*)\}", r"\1", t)
    t = re.sub(r"(?<=\w)[*\"`](?=\w)", "", t)  # syllable and stress marks in run-on forms (Fit"ful*ly)
    t = _CITATION.sub(" ", t)
    t = re.sub(r"\s+([,.;:])", r"\1", " ".join(t.split()))
    return re.sub(r"([,;:])\1+", r"\1", t).strip(" ,;")


def _segments(raw: str) -> list[str]:
    """The header (headword line and unnumbered definition) followed by the numbered senses."""
    return _SENSE_START.split(raw)


def domain_text(entry: GcideEntry, domain: str) -> str | None:
    """Cleaned text of the entry's senses labelled for ``domain`` (the whole entry when its header is
    labelled), or ``None`` when no sense carries a label of that domain."""
    pattern = DOMAIN_LABELS[domain]
    segments = _segments(entry.raw)
    if pattern.search(segments[0]):
        return clean(entry.raw)
    senses = [s for s in segments[1:] if pattern.search(s[:120])]
    if not senses:
        return None
    return f"{entry.headword}: " + " ".join(clean(s) for s in senses)


def is_general(entry: GcideEntry) -> bool:
    """True for an entry with no subject label and no obsolete/rare/dialect marker."""
    if _USAGE_MARKERS.search(entry.raw):
        return False
    return all(label in _NON_SUBJECT_LABELS for label in _ANY_LABEL.findall(entry.raw))


def iter_domain_entries(dict_path: str, domain: str) -> Iterator[tuple[GcideEntry, str]]:
    """``(entry, cleaned text)`` for every entry with a sense labelled for ``domain``."""
    for entry in read_entries(dict_path):
        text = domain_text(entry, domain)
        if text:
            yield entry, text
