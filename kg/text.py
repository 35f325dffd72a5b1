"""Tokenising and normalising text and labels the same way, so they can be matched.

Normalisation is case folding, accent stripping and a light inflectional stemmer (plural and
possessive endings only). Porter-style stemmers conflate too much for entity linking
("organization" -> "organ", "university" -> "univers"), which costs precision; plural folding keeps
"courts" = "court" and "diseases" = "disease" without that.

Example:
    >>> label_key("Chronic Kidney Diseases")
    ('chronic', 'kidney', 'disease')
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

TOKEN_RE = re.compile(r"\w+(?:[-'’.]\w+)*(?:\+\+|#)?", re.UNICODE)

# English function words (the usual IR stop list, plus a few discourse words) — never linked alone.
STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all almost also although am among an and another any anyone anything
    are aren't around as at be became because become been before being below between both but by can
    cannot could couldn't did didn't do does doesn't doing don't done down during each either else enough
    etc even ever every few for from further had hadn't has hasn't have haven't having he her here hers
    herself him himself his how however i if in into is isn't it it's its itself just least less let like
    made many may me might more most much must my myself neither never no nor not now of off often on once
    one only or other others otherwise our ours ourselves out over own per perhaps quite rather really same
    several shall she should shouldn't since so some such than that that's the their theirs them themselves
    then there there's these they this those though through thus to too toward towards under until up upon
    us very via was wasn't we were weren't what what's whatever when where whether which while who whom
    whose why will with within without would wouldn't yet you your yours yourself yourselves
    following whereas hence therefore e.g i.e vs versus
    zero two three four five six seven eight nine ten first second third
    """.split()  # noqa: SIM905
)


def _fold(s: str) -> str:
    if s.isascii():
        return s.lower()
    s = unicodedata.normalize("NFKD", s.casefold())
    return "".join(c for c in s if not unicodedata.combining(c)).replace("’", "'")


# plurale tantum and other words whose final "s" is not a plural ending
_KEEP_S = frozenset(
    """news series species means lens bus gas plus status virus thus basis analysis chaos bias atlas canvas
    alias always perhaps whereas sometimes various aids diabetes herpes rabies measles mumps scabies
    tetanus pancreas glottis testis pelvis thesis crisis axis physics economics mathematics politics ethics
    statistics genetics mechanics electronics graphics linguistics logistics robotics semantics dynamics
    arthritis""".split()  # noqa: SIM905
)


@lru_cache(maxsize=262144)
def stem(word: str) -> str:
    """Fold plural and possessive endings of an already case-folded word.

    Rules in order (first match wins): ``'s``/``s'`` dropped; ``-ies`` -> ``-y``; ``-(ss|x|ch|sh|z)es``
    -> drop ``es``; ``-es`` after other letters -> ``-e``; ``-s`` (not ``-ss``, ``-us``, ``-is``)
    dropped. Words of 3 letters or fewer, ``-ics`` words and a short list of words whose final ``s``
    is not a plural (``news``, ``series``, ``diabetes``) are kept.
    """
    if word.endswith("'s"):
        word = word[:-2]
    elif word.endswith("s'"):
        word = word[:-1]
    if len(word) <= 3 or not word.isalpha() or word in _KEEP_S or word.endswith("ics"):
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=262144)
def norm_token(raw: str) -> str:
    """Case-fold, strip accents, and stem one token (stop words are not stemmed: "does" is not "doe")."""
    folded = _fold(raw)
    return folded if folded in STOPWORDS else stem(folded)


def tokenize(text: str) -> list[tuple[int, int, str]]:
    """Word tokens as ``(start, end, surface)`` character spans."""
    return [(m.start(), m.end(), m.group()) for m in TOKEN_RE.finditer(text)]


@lru_cache(maxsize=262144)
def label_key(label: str) -> tuple[str, ...]:
    """The normalised token sequence of a label (what linking matches on)."""
    return tuple(map(norm_token, TOKEN_RE.findall(label)))


def is_acronym(surface: str) -> bool:
    """An all-caps token of 2–6 letters/digits (``CPU``, ``HIV``, ``GDP``); matched case-sensitively."""
    return 2 <= len(surface) <= 6 and surface.isupper() and any(c.isalpha() for c in surface)
