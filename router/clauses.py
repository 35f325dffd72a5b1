"""Deterministic, model-free pieces of decomposition: the clause splitter, the fast-path check and a
keyword domain hint.

They run in microseconds and never fail, so they are the fallback whenever the router LLM is
unreachable or its output cannot be validated or repaired.

Example:
    >>> split_clauses("I'm 45. What dose of ibuprofen is safe, and how do I deduct medical costs?")
    ["I'm 45. What dose of ibuprofen is safe?", 'How do I deduct medical costs?']
    >>> is_single_question("What is a tort?")
    True
"""

from __future__ import annotations

import re

__all__ = ["DOMAIN_KEYWORDS", "REQUEST_WORDS", "domain_hint", "is_request", "is_single_question", "split_clauses"]

DOMAIN_KEYWORDS: dict[str, tuple[str, ...]] = {
    "medicine": (
        "medic", "doctor", "disease", "symptom", "drug", "dose", "dosage", "ibuprofen", "aspirin", "diabet",
        "blood", "pressure", "heart", "cancer", "treat", "therapy", "patient", "clinic", "vaccin", "virus",
        "infection", "pain", "fever", "allerg", "surgery", "pregnan", "anatomy", "health", "diagnos",
        "antibiotic", "insulin", "cholesterol", "migraine", "headache", "nutrition", "vitamin", "sleep",
        "injur", "medication", "prescri", "asthma", "flu", "covid", "kidney", "liver", "lung", "skin",
    ),
    "law": (
        "law", "legal", "court", "contract", "sue", "lawsuit", "tenant", "landlord", "lease", "rights",
        "liabil", "copyright", "patent", "trademark", "licen", "gpl", "crime", "criminal", "attorney",
        "lawyer", "judge", "statute", "regulat", "gdpr", "privacy", "divorce", "custody", "will ", "estate",
        "tort", "negligen", "evict", "employ", "fired", "arrest", "jurisdic", "constitution", "clause",
        "compliance", "illegal", "permit", "visa",
    ),
    "code": (
        "python", "code", "function", "program", "javascript", "java", "sql", "query", "bug", "error",
        "compile", "algorithm", "api", "regex", "class", "git", "docker", "linux", "script", "database",
        "array", "list", "loop", "recursion", "software", "debug", "exception", "rust", "c++", "html",
        "css", "server", "thread", "async", "unit test", "machine learning", "neural", "sort", "string",
        "json", "http", "encrypt", "hash", "implement",
    ),
    "finance": (
        "tax", "invest", "stock", "bond", "loan", "mortgage", "interest", "rate", "bank", "money", "budget",
        "saving", "retire", "401k", "ira", "inflation", "econom", "market", "price", "dividend", "portfolio",
        "account", "deduct", "income", "credit", "debt", "insurance", "fund", "etf", "crypto", "bitcoin",
        "finance", "financ", "salary", "pay", "cost", "profit", "revenue", "gdp", "currency", "$",
        "capital gain", "expense", "afford",
    ),
    "general": (
        "history", "capital of", "country", "war", "president", "king", "river", "mountain", "planet",
        "recipe", "cook", "travel", "weather", "sport", "music", "movie", "book", "poem", "story", "write a",
        "language", "translate", "geograph", "who was", "when did", "where is", "population", "culture",
        "religion", "animal", "science", "physics", "chemistry", "space",
    ),
}

# Keywords match at the start of a word ("api" must not match inside "capital"); most are stems.
_KEYWORD_RES = {
    d: re.compile("|".join((r"\b" if k[0].isalnum() else "") + re.escape(k.strip()) for k in ks))
    for d, ks in DOMAIN_KEYWORDS.items()
}

_QUESTION_WORDS = (
    "what", "how", "why", "when", "where", "which", "who", "whom", "whose", "is", "are", "can", "could",
    "should", "would", "will", "does", "do", "did", "was", "were", "has", "have",
)
_IMPERATIVES = (
    "explain", "write", "describe", "give", "list", "calculate", "compute", "summarize", "summarise", "tell",
    "compare", "suggest", "recommend", "show", "define", "translate", "find", "outline", "draft", "name",
    "estimate", "create", "help", "provide", "implement", "convert", "discuss", "fix", "identify", "analyze",
    "analyse", "evaluate", "design", "craft", "generate", "rewrite", "edit", "solve", "prove", "debug",
    "review", "propose", "brainstorm", "illustrate", "elaborate", "clarify", "assess", "predict", "determine",
    "classify", "extract", "compose", "develop", "build", "make", "recommend", "advise",
)
# Words that may stand before the verb of a request ("Please explain…", "Roughly what is…").
_LEAD_INS = frozenset(("please", "roughly", "briefly", "quickly", "now", "so", "ok", "okay", "then", "and",
                       "also", "finally", "first", "next", "lastly", "kindly", "just"))
_STARTERS = _QUESTION_WORDS + _IMPERATIVES
REQUEST_WORDS = frozenset((*_IMPERATIVES, *_LEAD_INS, "me", "us"))
"""Words that frame a request ("please explain …", "tell me …") rather than say what it is about."""
# Words that start a new clause after "and"/","; fewer than _STARTERS because "list", "name", "show"…
# are also nouns ("a tuple and list"), and "which"/"who" after a comma open relative clauses.
_AND_STARTERS = "|".join((
    "what", "how", "why", "when", "where", "which", "who", "is", "are", "can", "could", "should", "would",
    "does", "do", "did", "explain", "write", "describe", "give", "calculate", "compute", "summarize",
    "summarise", "tell", "compare", "suggest", "recommend", "define", "translate", "outline", "estimate",
    "provide", "implement", "convert",
))
_COMMA_STARTERS = "|".join(w for w in _AND_STARTERS.split("|") if w not in ("which", "who", "when", "where"))

# "list"/"name" are also nouns, so they start a clause only before a count or a determiner ("and list five
# examples", "and name the largest …").
_COUNTED = (r"(?:list|name)\s+(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|some|a\s+few|several|the|"
            r"all|any|examples)\b")
# A starter that is the sentence's last word ("…, and why?") asks about the clause before it: no split.
_NOT_LAST = r"(?![\s?.!\"')]*$)"
# A new clause begins at '; ', at 'also'/'additionally'/'plus', and at 'and'/',' before a clause starter.
_SPLIT_RE = re.compile(
    rf"\s*;\s*|\s*,?\s+(?:and\s+)?(?:also|additionally|plus)[, ]+(?=(?:{_AND_STARTERS})\b{_NOT_LAST})"
    rf"|\s*,?\s+and\s+(?=(?:(?:{_AND_STARTERS})\b{_NOT_LAST}|{_COUNTED}))"
    rf"|\s*,\s+(?=(?:{_COMMA_STARTERS})\b{_NOT_LAST})",
    re.IGNORECASE,
)
# A clause led by a subordinating conjunction ("When I quit, does …", "If it rains, what …") is not a
# request of its own: it conditions the clause after its comma. "When"/"where"/"while" followed by an
# auxiliary ("When did …", "When is …") ask a question instead.
_SUBORDINATE_RE = re.compile(
    r"^(?:if|when|whenever|once|after|before|since|while|unless|although|though|because|assuming|"
    r"as\s+soon\s+as|in\s+case|even\s+if)\b(?!\s+(?:is|are|was|were|do|does|did|will|would|can|could|should|"
    r"has|have|had|shall|might|may|must)\b)", re.IGNORECASE)
_SENTENCE_RE = re.compile(r"(?<=[.?!])\s+(?=[\"'(A-Z0-9])|\n+")
_ITEM = "\x00"  # marks a piece that is a request because it is an item of a counted list
_JOIN = "\x01"  # joins the sentences of one numbered item (kept apart until the item is emitted)
_LIST_MARK_RE = re.compile(r"^\s*(?:\(?\d+[.)]|[-*•])\s+")
_WANT_RE = re.compile(r"^(?:i(?:'d| would)(?: also)? like|i(?: also)? (?:want|need) to know|i(?: also)? wonder)\b",
                      re.IGNORECASE)
_CONNECTIVE_RE = re.compile(
    r"^(?:(?:(?:my|the|a|and)\s+)?(?:first|second|third|fourth|fifth|next|last|final|another|other|one more|"
    r"follow-up)\s+(?:question|one|thing|request|task)\s*:\s*"
    r"|(?:and|also|additionally|plus|then|finally|firstly|first|secondly|second|thirdly|third|lastly|next|"
    r"after that|afterwards|on top of that|besides|separately|moreover|furthermore|in addition|unrelated(?:ly)?|"
    r"on (?:an|a) ?(?:other|different|unrelated|separate) note|by the way|btw|one more thing|also unrelated)"
    r"\b[,:]?\s*)+", re.IGNORECASE)


# A sentence that starts an ordinal item: "First, …", "Secondly: …", "Third question: …", "The last one: …".
_ORDINAL_RE = re.compile(
    r"^(?:(?:(?:my|the|a|and)\s+)?(?:first|second|third|fourth|fifth|last|final)\s+(?:question|one|thing|request|task)"
    r"\s*:|(?:first|firstly|second|secondly|third|thirdly|fourth|fifth|finally|lastly)\s*[,:])", re.IGNORECASE)

_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6}
# "I need three things: X, Y, and Z." -- a counted list of requests after a colon.
_ENUM_RE = re.compile(r"^(?P<lead>.*?\b(?P<k>two|three|four|five|six|[2-6])\s+(?:things|questions|requests|topics|"
                      r"items|tasks)\b[^:]{0,40}):\s*(?P<rest>.+)$", re.IGNORECASE)
_ENUM_SEP_RE = re.compile(r"\s*,\s*(?:and\s+|plus\s+)?|\s*;\s*|\s+and\s+(?=(?:the|a|an|some|how|what|why|which|"
                          r"who|where|when)\b)", re.IGNORECASE)


# "Give me X, plus Y": a second object of the same request verb.
_PLUS_RE = re.compile(rf",\s+(?:and\s+)?plus\s+(?!(?:{_AND_STARTERS})\b)", re.IGNORECASE)
_VERB_HEAD_RE = re.compile(r"^((?:please\s+)?[a-z]+(?:\s+(?:me|us))?)\s", re.IGNORECASE)


def _shared_verb(piece: str) -> list[str]:
    """``"Give me a history of X, plus some tips on Y"`` -> the request with each object: the verb and its
    "me" are repeated for the second (only when the piece starts with an imperative)."""
    halves = _PLUS_RE.split(piece, maxsplit=1)
    head = _VERB_HEAD_RE.match(piece.strip())
    if len(halves) != 2 or not head or head[1].lower().removeprefix("please ").split()[0] not in _IMPERATIVES:
        return [piece]
    return [halves[0], f"{head[1]} {halves[1]}"]


# Multiple-choice options written after their question: "(A) … (B) … (C) …".
_OPTION_RE = re.compile(r"(?<![\w(])\(([A-J])\)\s")
# a clause that is a (masked) run of options, or the numbered statements "I. … II. …" its options refer to
_OPTION_START_RE = re.compile("^(?:\\([A-J]\\)|I[.\ue000])[\\s\ue005]")
_HAS_OPTIONS_RE = re.compile("\\([A-J]\\)\ue005")  # a clause that holds a (masked) run of options
_MASK = {".": "\ue000", "?": "\ue001", "!": "\ue002", ";": "\ue003", ",": "\ue004", " ": "\ue005", "\t": "\ue005",
         "\n": "\ue005"}
_UNMASK = {v: k for k, v in _MASK.items() if k not in "\t\n"}
_MASK_RE = re.compile("[" + "".join(_UNMASK) + "]")
_RUN_END_RE = re.compile(r"[.?!](?=\s+[\"'A-Z0-9]|\s*$)|\n")


def _mask_options(text: str) -> str:
    """Hide the punctuation inside runs of options "(A) … (B) …" (from "(A)" to the end of the sentence that
    holds the last letter in sequence), so the options are never split from each other."""
    out, pos = [], 0
    marks = list(_OPTION_RE.finditer(text))
    i = 0
    while i < len(marks):
        if marks[i][1] != "A":
            i += 1
            continue
        j = i
        while j + 1 < len(marks) and ord(marks[j + 1][1]) == ord(marks[j][1]) + 1:
            j += 1
        if j == i:  # a lone "(A)" is no run of options
            i += 1
            continue
        start = marks[i].start()
        end_m = _RUN_END_RE.search(text, marks[j].end())
        end = end_m.start() if end_m else len(text)
        out.append(text[pos:start])
        out.append(text[start:end].translate(str.maketrans(_MASK)))
        pos, i = end, j + 1
    out.append(text[pos:])
    return "".join(out)


# Numbered statements before options that refer to them: "Which … ? I. X II. Y III. Z (A) I only (B) II only".
_ROMAN_RUN_RE = re.compile("(?<=\\s)I\\.\\s.+?\\sII\\.\\s.+?(?=\\s\\([A-J]\\)\ue005(?:I|II|III|IV|V)\\b)", re.DOTALL)
# A table header over the options ("EXPORTS DEMAND FOR $ (A) Decrease Decrease (B) …"): capitals only.
_HEADER_RE = re.compile(r"^[^a-z]*[A-Z]{2,}[^a-z]*$")


def _mask_statements(text: str) -> str:
    """Hide the punctuation of numbered statements "I. … II. …" that a run of options (already masked)
    refers to ("(A) I only"), so the statements stay with their question."""
    return _ROMAN_RUN_RE.sub(lambda m: m[0].translate(str.maketrans(_MASK)), text)


def _unmask(text: str) -> str:
    return _MASK_RE.sub(lambda m: _UNMASK[m[0]], text)


def _enumerated(sentence: str) -> list[str] | None:
    """The items of a counted list ("Three things: X, Y and Z."), when their number matches the count."""
    m = _ENUM_RE.match(sentence)
    if not m:
        return None
    items = [i.strip(" .") for i in _ENUM_SEP_RE.split(m["rest"]) if i and i.strip(" .")]
    return items if len(items) == _NUMBERS[m["k"].lower()] else None


def is_request(clause: str) -> bool:
    """A clause asks something: it ends with '?' or starts (after lead-ins like "please") with a
    question word or an imperative verb."""
    c = clause.strip()
    if c.endswith("?") or _WANT_RE.match(c) or _HAS_OPTIONS_RE.search(c):  # options: a question is asked
        return True
    if _SUBORDINATE_RE.match(c):  # "If it rains, what …" asks what its main clause asks; "When X, it Y." nothing
        return "," in c and is_request(c.split(",", 1)[1])
    words = [w for w in re.split(r"[^\w']+", c.lower()) if w]
    while words and words[0] in _LEAD_INS:
        words.pop(0)
    return bool(words) and words[0].split("'")[0] in _STARTERS


def _tidy(clause: str) -> str:
    c = _CONNECTIVE_RE.sub("", _LIST_MARK_RE.sub("", clause.strip())).strip(" ,;")
    return c[:1].upper() + c[1:] if c else c


def split_clauses(query: str, *, max_parts: int = 8) -> list[str]:
    """Split a compound query into self-contained requests.

    Sentences are split at terminal punctuation and newlines, then at ``;`` and at ``and``/``also``/
    comma boundaries followed by a question word or an imperative verb. Context sentences that ask
    nothing ("I'm 45 and take statins.") are attached to the next request so it stays self-contained.
    Where the query numbers its requests (two or more list lines, or sentences led by "First," /
    "Second question:" ...), each numbered item is one request, however many sentences it holds. A run
    of options "(A) … (B) …" stays with its question, and so do the numbered statements "I. … II. …"
    or the capitals table header it follows.
    Always returns at least one part (the whole query when nothing splits).
    """
    sentences = _sentences(_mask_statements(_mask_options(query.strip())))
    parts: list[str] = []
    for i, (sentence, segment) in enumerate(sentences):
        if segment is not None:  # a numbered or ordinal item ("Second, …", "2) …"): one request, unsplit
            parts.append(f"{_ITEM}{segment}" if any(is_request(_tidy(s)) for s in segment.split(_JOIN))
                         else segment.replace(_JOIN, " "))
            continue
        items = _enumerated(sentence)
        if items:
            rest = _ENUM_RE.match(sentence)["rest"]
            later = sum(is_request(_tidy(s)) for s, _ in sentences[i + 1:])
            if later >= len(items) - 1 and is_request(rest):
                # "Two things: X? And Y?" counts sentences, not the commas of X
                sentence, items = rest, None
        if items:  # each item of a counted list is one request, whatever its form
            parts.extend(f"{_ITEM}{i}" for i in items)
            continue
        pieces = [q for p in _SPLIT_RE.split(sentence) if p and p.strip() for q in _shared_verb(p)]
        merged: list[str] = []
        for p in pieces:  # a leading subordinate clause stays with the clause it conditions
            if merged and _SUBORDINATE_RE.match(_tidy(merged[-1])) and not merged[-1].rstrip().endswith("?"):
                merged[-1] = f"{merged[-1].rstrip(' ,')}, {p.strip()}"
            else:
                merged.append(p)
        parts.extend(merged)
    out: list[str] = []
    context: list[str] = []
    for raw in parts:
        item = raw.startswith(_ITEM)
        clause = _tidy(raw.removeprefix(_ITEM).replace(_JOIN, " "))
        if not clause:
            continue
        if out and not context and (_OPTION_START_RE.match(clause) or _HEADER_RE.match(_options_stem(clause))):
            out[-1] = f"{out[-1]} {clause}"  # options (and their statements or table header) belong to the question
            continue
        if len(clause.split()) < 2 and out and not item:  # a dangling word belongs to the previous clause
            out[-1] = f"{out[-1].rstrip('?.!')} {clause}".strip()
            continue
        if not item and not is_request(clause):
            context.append(clause if clause[-1] in ".!?" else clause + ".")
            continue
        if not clause.endswith(("?", ".", "!")) and _JOIN not in raw:  # an item of several sentences: as written
            clause += "?" if clause.split()[0].lower() in _QUESTION_WORDS else "."
        out.append(" ".join([*context, clause]))
        context = []
    if context:
        if out:
            out[-1] = f"{out[-1]} {' '.join(context)}"
        else:
            out.append(" ".join(context))
    if len(out) > max_parts:
        out = [*out[: max_parts - 1], " ".join(out[max_parts - 1 :])]
    return [_unmask(c) for c in out] or [query.strip()]


def _sentences(masked: str) -> list[tuple[str, str | None]]:
    """The query's sentences, each with ``None`` or, where the query numbers its requests (two or more list
    lines "1) …", or sentences led by "First," / "Second question:" …), the whole item it starts, its
    sentences joined by ``_JOIN`` (the following sentences of an item are then left out)."""
    lines = masked.splitlines()
    listed = sum(bool(_LIST_MARK_RE.match(line)) for line in lines) >= 2
    flat: list[tuple[str, bool]] = []
    for line in lines:
        starts_item = listed and bool(_LIST_MARK_RE.match(line))
        for j, s in enumerate(_SENTENCE_RE.split(" ".join(_LIST_MARK_RE.sub("", line).split()))):
            if s.strip():
                flat.append((s.strip(), (starts_item and j == 0) or bool(_ORDINAL_RE.match(s.strip()))))
    if sum(starts for _, starts in flat) < 2:
        return [(s, None) for s, _ in flat]
    out: list[tuple[str, str | None]] = []
    for s, starts in flat:
        if starts:
            out.append((s, s))
        elif out and out[-1][1] is not None:
            out[-1] = (out[-1][0], f"{out[-1][1]}{_JOIN}{s}")
        else:
            out.append((s, None))  # before the first item: split as usual (context, or an unnumbered first request)
    return out


def _options_stem(clause: str) -> str:
    """The text of a clause before its (masked) run of options; '' when it holds none."""
    m = _HAS_OPTIONS_RE.search(clause)
    return clause[: m.start()].strip() if m else ""


def is_single_question(query: str, *, max_words: int = 40) -> bool:
    """Cheap check for the fast path: one short request with no second clause.

    True when the query has at most ``max_words`` words, at most one '?' (at the end), no list
    markers or semicolons, and the clause splitter finds exactly one part.
    """
    q = query.strip()
    if not q or len(q.split()) > max_words or q.count("?") > 1 or ";" in q or "\n" in q:
        return False
    if "?" in q and not q.endswith("?"):
        return False
    return len(split_clauses(q)) == 1


def domain_hint(text: str, domains: tuple[str, ...] | list[str] | None = None) -> str:
    """The domain whose keywords occur most often in the text ('general' on a tie or no match)."""
    t = text.lower()
    given = tuple(domains) if domains else tuple(DOMAIN_KEYWORDS)
    # a fixed order (ties go to the earlier domain) so the hint does not depend on how domains are listed
    allowed = tuple(d for d in DOMAIN_KEYWORDS if d in given) + tuple(d for d in given if d not in DOMAIN_KEYWORDS)
    best, best_n = ("general" if "general" in allowed else allowed[0]), 0
    for domain in allowed:
        pattern = _KEYWORD_RES.get(domain)
        n = len(pattern.findall(t)) if pattern else 0
        if (n > best_n and domain != "general") or (n > best_n and domain == "general" and best_n == 0):
            best, best_n = domain, n
    return best
