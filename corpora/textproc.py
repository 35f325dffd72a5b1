"""Markup to plain text (reST, DocBook, wikitext) and chunking into passages.

Every cleaner returns paragraphs separated by a blank line; ``chunk_text`` packs paragraphs into
passages of about ``target_words`` words, never more than ``max_words``.
"""

from __future__ import annotations

import html
import re
import textwrap

TARGET_WORDS = 220
MAX_WORDS = 320
MIN_TAIL_WORDS = 40

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")
_WS = re.compile(r"[ \t\r\f\v]+")


def word_count(text: str) -> int:
    return len(text.split())


def squash(text: str) -> str:
    """Collapse all whitespace runs (newlines included) into single spaces."""
    return " ".join(text.split())


def paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs (blank-line separated), trailing spaces removed, inner lines kept."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln[: len(ln) - len(ln.lstrip())] + _WS.sub(" ", ln.strip()) for ln in block.split("\n")]
        block = textwrap.dedent("\n".join(ln for ln in lines if ln.strip()))
        if block.strip():
            out.append(block)
    return out


def _split_long(par: str, max_words: int) -> list[str]:
    """Split one over-long paragraph at sentence ends, then at word boundaries if still too long."""
    pieces: list[str] = []
    current: list[str] = []
    n = 0
    for sentence in _SENTENCE_END.split(par):
        words = sentence.split()
        while len(words) > max_words:  # a run-on "sentence" (a code block, a list): hard cut
            if current:
                pieces.append(" ".join(current))
                current, n = [], 0
            pieces.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if n + len(words) > max_words and current:
            pieces.append(" ".join(current))
            current, n = [], 0
        current.extend(words)
        n += len(words)
    if current:
        pieces.append(" ".join(current))
    return pieces


def chunk_text(text: str, *, target_words: int = TARGET_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Pack the paragraphs of ``text`` into passages of roughly ``target_words`` words.

    A passage closes once it reaches ``target_words``; paragraphs over ``max_words`` are split at
    sentence ends. A short tail (under ``MIN_TAIL_WORDS``) is merged into the previous passage when
    that keeps it within 1.25 x ``max_words``.

    Returns:
        passages in document order (empty list for blank text).
    """
    units: list[str] = []
    for par in paragraphs(text):
        units.extend(_split_long(par, max_words) if word_count(par) > max_words else [par])
    chunks: list[str] = []
    current: list[str] = []
    n = 0
    for unit in units:
        w = word_count(unit)
        if current and n + w > max_words:
            chunks.append("\n\n".join(current))
            current, n = [], 0
        current.append(unit)
        n += w
        if n >= target_words:
            chunks.append("\n\n".join(current))
            current, n = [], 0
    if current:
        tail = "\n\n".join(current)
        if chunks and n < MIN_TAIL_WORDS and word_count(chunks[-1]) + n <= int(1.25 * max_words):
            chunks[-1] = chunks[-1] + "\n\n" + tail
        else:
            chunks.append(tail)
    return chunks


# --------------------------------------------------------------------------- reStructuredText

_RST_DROP_DIRECTIVES = {
    "index", "toctree", "sectionauthor", "moduleauthor", "highlight", "testsetup", "testcleanup",
    "raw", "image", "figure", "include", "literalinclude", "audit-event", "audit-event-table",
    "csv-table", "tabularcolumns", "only", "c:namespace", "cssclass", "rst-class", "contents",
    "limited-api-list", "pep-index", "productionlist", "opcode",
}  # fmt: skip
_RST_VERSION_LABELS = {
    "versionadded": "New in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
    "deprecated-removed": "Deprecated since version",
}
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
_RST_COMMENT = re.compile(r"^(\s*)\.\.(\s+.*)?$")
_RST_OPTION = re.compile(r"^\s*:[\w -]+:(\s|$)")
_RST_ADORNMENT = re.compile(r"^\s*([=\-~^*#\"'`+_.:])\1{2,}\s*$")
_RST_TABLE_RULE = re.compile(r"^\s*[+=\-| ]*[+=][+=\-| ]*$")
_RST_ROLE = re.compile(r":[\w.:+-]+:`([^`]*)`")
_RST_TITLE_TARGET = re.compile(r"^(.*?)\s*<[^<>]+>$", re.S)
_RST_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_RST_REF = re.compile(r"`([^`]+)`__?")


def _rst_role(m: re.Match[str]) -> str:
    inner = m.group(1)
    tm = _RST_TITLE_TARGET.match(inner)
    if tm and tm.group(1):
        inner = tm.group(1)
    return inner.lstrip("~!")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_to_text(source: str) -> str:
    """Plain text from a reST file: markup and Sphinx bookkeeping removed, prose and code kept."""
    lines = source.replace("\t", "    ").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _RST_DIRECTIVE.match(line)
        if m or _RST_COMMENT.match(line):
            base = _indent(line)
            name = m.group(2) if m else ""
            drop = m is None or name in _RST_DROP_DIRECTIVES
            if not drop and m.group(3).strip():
                label = _RST_VERSION_LABELS.get(name)
                args = m.group(3).strip()
                out.append(" " * base + (f"{label} {args}." if label else args))
            i += 1
            while (
                i < len(lines)
                and lines[i].strip()
                and _indent(lines[i]) > base
                and _RST_OPTION.match(lines[i])
            ):
                i += 1  # directive options (":noindex:", ":synopsis: ...")
            if drop:  # skip the body too; a kept directive's body is ordinary text (nested directives too)
                while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                    i += 1
                out.append("")
            continue
        if line.strip().startswith(("|", "+")) and line.rstrip().endswith(("|", "+")):
            i += 1  # grid-table rows and borders: cells cut into fragments read as noise
            continue
        if _RST_ADORNMENT.match(line) or (_RST_TABLE_RULE.match(line) and line.strip()):
            i += 1
            continue
        stripped = line.rstrip()
        if stripped.strip() == "::":
            out.append("")
        else:
            if stripped.endswith("::"):
                stripped = stripped[:-1]
            stripped = stripped.replace("|", " ") if stripped.lstrip().startswith("|") else stripped
            out.append(stripped)
        i += 1
    text = "\n".join(out)
    text = _RST_ROLE.sub(_rst_role, text)
    text = _RST_LINK.sub(lambda m: m.group(1), text)
    text = text.replace("``", "")
    text = _RST_REF.sub(lambda m: m.group(1), text)
    text = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\|[\w-]+\|_", "", text)
    text = re.sub(r"\|(\w[\w-]*)\|", r"\1", text)
    return "\n\n".join(paragraphs(text))


# --------------------------------------------------------------------------- DocBook XML

_DB_DROP = re.compile(
    r"<(indexterm|mediaobject|screenshot|inlinemediaobject|remark|xi:include|info|bookinfo)\b[^>]*?"
    r"(?:/>|>.*?</\1\s*>)",
    re.S,
)
_DB_BLOCK = re.compile(
    r"</?(para|simpara|title|listitem|varlistentry|term|row|itemizedlist|orderedlist|variablelist"
    r"|sect\d|section|chapter|appendix|note|tip|warning|important|caution|example|table|informaltable"
    r"|glossentry|glossterm|glossdef|formalpara|procedure|step|programlisting|screen|blockquote"
    r"|literallayout|figure|caption)\b[^>]*>"
)
_ENTITY_DEF = re.compile(r"<!ENTITY\s+(?!%)([\w.-]+)\s+\"([^\"]*)\"\s*>", re.S)


def docbook_entities(dtd_texts: list[str]) -> dict[str, str]:
    """General entities defined in DTD files (values resolved recursively, markup stripped)."""
    raw: dict[str, str] = {}
    for dtd in dtd_texts:
        for name, value in _ENTITY_DEF.findall(dtd):
            raw.setdefault(name, value)

    def resolve(value: str, depth: int = 0) -> str:
        if depth > 8:
            return value
        value = re.sub(r"&([\w.-]+);", lambda m: resolve(raw[m.group(1)], depth + 1) if m.group(1) in raw
                       else m.group(0), value)  # fmt: skip
        return re.sub(r"<[^>]+>", "", value)

    return {name: squash(resolve(value)) for name, value in raw.items()}


def docbook_to_text(xml: str, entities: dict[str, str]) -> str:
    """Plain text from a DocBook fragment: block elements become paragraphs, other tags vanish."""
    xml = re.sub(r"<!--.*?-->", " ", xml, flags=re.S)
    xml = re.sub(r"<!DOCTYPE[^>\[]*(\[.*?\])?\s*>", " ", xml, flags=re.S)
    xml = re.sub(r"<\?.*?\?>", " ", xml, flags=re.S)
    xml = _DB_DROP.sub(" ", xml)
    xml = re.sub(r"</entry\s*>", " | ", xml)  # table cells stay on their row's line
    xml = _DB_BLOCK.sub("\n\n", xml)
    xml = re.sub(r"<[^>]+>", "", xml)
    xml = re.sub(r"&([\w.-]+);", lambda m: entities.get(m.group(1), m.group(0)), xml)
    xml = html.unescape(xml)
    paras = (squash(p).removesuffix(" |") for p in re.split(r"\n\s*\n", xml))
    return "\n\n".join(p for p in paras if p.strip(" |"))


# --------------------------------------------------------------------------- wikitext

_WIKI_STOP_SECTIONS = {
    "references", "external links", "see also", "further reading", "notes", "bibliography",
    "sources", "footnotes", "citations", "notes and references", "works cited",
}  # fmt: skip
_WIKI_NON_ARTICLE_LINK = re.compile(
    r"^\s*:?\s*(file|image|category|media|wikipedia|wp|[a-z]{2,3}(-[a-z]+)?):", re.I
)


def _strip_nested(text: str, opener: str, closer: str) -> str:
    """Remove balanced ``opener ... closer`` spans (templates, tables), innermost first."""
    pattern = re.compile(re.escape(opener) + r"(?:(?!" + re.escape(opener) + r"|" + re.escape(closer)
                         + r").)*?" + re.escape(closer), re.S)  # fmt: skip
    for _ in range(50):
        text, n = pattern.subn(" ", text)
        if n == 0:
            break
    return text


def _wiki_link(m: re.Match[str]) -> str:
    inner = m.group(1)
    if _WIKI_NON_ARTICLE_LINK.match(inner):
        return ""
    return inner.split("|")[-1]


def wikitext_to_text(wikitext: str) -> str:
    """Plain prose from MediaWiki markup: templates, tables, references, files and categories go;
    link labels stay; the article is cut at its "References"/"See also"/"External links" section."""
    t = html.unescape(wikitext)
    t = re.sub(r"<!--.*?-->", " ", t, flags=re.S)
    t = re.sub(r"<ref[^>/]*/>", " ", t)
    t = re.sub(r"<ref[^>]*>.*?</ref\s*>", " ", t, flags=re.S)
    t = re.sub(
        r"<(gallery|math|timeline|imagemap|score|syntaxhighlight|source)\b.*?</\1\s*>", " ", t, flags=re.S
    )
    t = _strip_nested(t, "{{", "}}")
    t = _strip_nested(t, "{|", "|}")
    for _ in range(10):  # links can nest (a link inside an image caption)
        t, n = re.subn(r"\[\[([^\[\]]*)\]\]", _wiki_link, t)
        if n == 0:
            break
    t = re.sub(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]", r"\1", t)
    t = re.sub(r"\[(?:https?:)?//[^\]]*\]", " ", t)
    t = re.sub(r"'{2,}", "", t)
    t = re.sub(r"<[^>]+>", " ", t)
    out: list[str] = []
    for line in t.split("\n"):
        s = line.strip()
        heading = re.match(r"^(={2,6})\s*(.*?)\s*\1$", s)
        if heading:
            if heading.group(2).strip().lower() in _WIKI_STOP_SECTIONS:
                break
            out.extend(["", heading.group(2), ""])
            continue
        if s.startswith(("__", "#REDIRECT", "#redirect")):
            continue
        s = re.sub(r"^[*#:;]+\s*", "", s)
        out.append(s)
    paras = [squash(p) for p in re.split(r"\n\s*\n", "\n".join(out))]
    # keep headings but drop leftover fragments of markup (lone punctuation, empty list items)
    return "\n\n".join(p for p in paras if re.search(r"[A-Za-z]{2,}", p))


# --------------------------------------------------------------------------- AsciiDoc and Markdown

_ADOC_DROP_LINE = re.compile(
    r"^(?:[=\-~^+.*_/]{4,}|--|\+|\[\[[^\]]*\]\]|\[[\w ,=\"'#.-]*\]|:[\w-]+:.*|"
    r"(?:include|ifdef|ifndef|endif|image)::.*|//.*)$"
)
"""AsciiDoc lines with no prose: title underlines and block delimiters, list continuations, anchors,
block attributes (``[verse]``), document attributes, preprocessor directives, comments."""


_ADOC_ATTRIBUTES = {"litdd": "--", "tilde": "~", "caret": "^", "startsb": "[", "endsb": "]", "nbsp": " "}
"""Character attributes git's documentation uses where the literal character would be markup."""


def asciidoc_to_text(source: str) -> str:
    """Plain text from an AsciiDoc file (git's documentation): markup and bookkeeping removed, prose,
    command synopses and option lists kept."""
    out: list[str] = []
    for line in source.replace("\t", "    ").split("\n"):
        s = line.strip()
        if _ADOC_DROP_LINE.match(s):
            out.append("")
            continue
        s = re.sub(r"^=+\s+", "", s)  # one-line section titles
        s = re.sub(r"::$", ":", s)  # labelled-list terms
        out.append(s)
    text = "\n".join(out)
    text = re.sub(r"link(?:git)?:([\w.-]+)\[\d*\]", r"\1", text)
    text = re.sub(r"(?:https?|link|mailto):\S+\[([^\]]*)\]", r"\1", text)
    text = re.sub(r"<<[^,>]+,([^>]+)>>", r"\1", text)
    text = re.sub(r"<<([^>]+)>>", r"\1", text)
    text = re.sub(r"(?<![\w'])'([^'\n]+)'(?![\w'])", r"\1", text)  # 'emphasis'
    text = re.sub(r"``(.*?)''", r'"\1"', text)
    text = text.replace("`", "")
    text = re.sub(r"\{(\w+)\}", lambda m: _ADOC_ATTRIBUTES.get(m.group(1), m.group(0)), text)
    return "\n\n".join(squash(p) for p in paragraphs(text))


def markdown_to_text(source: str) -> str:
    """Plain text from a Markdown file: front matter, HTML tags, link targets and emphasis marks
    removed; headings, prose, tables (cells on one line) and code blocks kept."""
    text = re.sub(r"\A---\n.*?\n---\n", "", source, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)  # images
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # links keep their label
    text = re.sub(r"\[([^\]]+)\]\[[^\]]*\]", r"\1", text)
    text = re.sub(r"(?m)^\[[^\]]+\]:\s*\S+.*$", "", text)  # link reference definitions
    text = re.sub(r"</?[A-Za-z][^>]*>", " ", text)
    out = []
    for line in text.split("\n"):
        s = line.strip()
        if re.match(r"^(```|~~~)", s) or re.match(r"^\|?\s*:?-{3,}", s):
            out.append("")  # code fences and table rules
            continue
        s = re.sub(r"^#{1,6}\s+", "", s)
        s = s.strip("|").replace(" | ", " ") if s.startswith("|") else s
        out.append(s)
    text = "\n".join(out)
    text = re.sub(r"(\*\*|__)(\S(?:.*?\S)?)\1", r"\2", text)
    text = text.replace("`", "")
    return "\n\n".join(squash(p) for p in paragraphs(text))
