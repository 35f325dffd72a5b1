"""Decomposition: a compound query becomes a list of self-contained sub-tasks.

Paths, recorded in :attr:`Decomposition.path`:

- ``fast_path``: a cheap check says the query is one request (:func:`router.clauses.is_single_question`,
  or the clause splitter finds a single part); the LLM is skipped.
- ``clear_split``: the clause splitter finds several parts and each is clearly a request of its own
  (:func:`is_clear_split`); the LLM is skipped. On held-out compound rows the splitter's part count
  was right more often than the small router LLM's (``benchmarks/compound_decomposition.py``), so the
  LLM is asked only where the split is unclear.
- ``llm``: the router LLM's output (JSON schema-constrained where the backend supports it, else a
  prefilled ``[{"subtask": "``) parsed and passed strict validation unchanged.
- ``repaired``: the output needed repair (JSON extracted or closed, unknown domains mapped, invented
  sub-tasks dropped, clauses the LLM left out added back) and then validated. An output with more
  sub-tasks than the clause splitter's parts (when it finds several) is replaced by those parts: on every
  compound set measured, the small router LLM was never right where it split further than the splitter.
- ``clause_splitter``: the LLM was unreachable or its output could not be repaired; the
  deterministic splitter answered. ``flagged`` is true and ``reason`` says why.

Example:
    >>> d = Decomposer(make_router_llm("none"))
    >>> r = d.decompose("What is GDP? And how do I sort a list in Python?")
    >>> r.path, r.flagged, [s.text for s in r.subtasks]
    ('clause_splitter', True, ['What is GDP?', 'How do I sort a list in Python?'])
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.domains import DOMAINS
from router.clauses import REQUEST_WORDS, domain_hint, is_request, is_single_question, split_clauses
from router.llm import RouterLLM, RouterLLMError, RouterLLMUnavailableError

log = logging.getLogger(__name__)

__all__ = [
    "Decomposer", "Decomposition", "DecompositionError", "SubTask", "content_tokens", "decomposition_schema",
    "is_clear_split",
]

Path = Literal["llm", "repaired", "clause_splitter", "fast_path", "clear_split"]
_WORD_RE = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    ["a", "an", "the", "is", "are", "was", "were", "be", "of", "to", "in", "on", "for", "and", "or", "what", "how", "why", "when", "where", "which", "who", "do", "does", "did", "i", "my", "me", "you", "your", "it", "its", "this", "that", "with", "can", "could", "should", "would", "will", "as", "at", "by", "from", "about"]
)


class DecompositionError(ValueError):
    """The LLM output failed validation (the message says which rule)."""


class SubTask(BaseModel):
    text: str = Field(..., min_length=1)
    domain_hint: str = Field("general", description="the router LLM's (or keyword) domain guess; a feature only")


class Decomposition(BaseModel):
    subtasks: list[SubTask]
    path: Path
    flagged: bool = False
    reason: str = ""
    llm: str = ""
    raw: str = Field("", description="the LLM's raw output (empty on the fast path)")
    latency_ms: float = 0.0


def decomposition_schema(domains: list[str], max_subtasks: int = 6, *, labels: bool = True) -> dict[str, Any]:
    """JSON schema for ``{"subtasks": [{"subtask": str, "domain": enum}]}``, or ``{"subtasks": [str]}``
    without ``labels``."""
    if not labels:
        return {
            "type": "object",
            "properties": {"subtasks": {"type": "array", "minItems": 1, "maxItems": max_subtasks,
                                        "items": {"type": "string", "minLength": 1, "maxLength": 400}}},
            "required": ["subtasks"],
            "additionalProperties": False,
        }
    return {
        "type": "object",
        "properties": {
            "subtasks": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_subtasks,
                "items": {
                    "type": "object",
                    "properties": {
                        "subtask": {"type": "string", "minLength": 1, "maxLength": 400},
                        "domain": {"type": "string", "enum": list(domains)},
                    },
                    "required": ["subtask", "domain"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["subtasks"],
        "additionalProperties": False,
    }


_SYSTEM = """You split a user's message into independent sub-questions, one per distinct request.
Each sub-question must be self-contained (repeat needed context) and keep the user's wording.
Do not answer. Do not invent questions. A message with a single request gives a single sub-question.
Label each with one domain: {domains}.
Domains: {descriptions}.
Reply with JSON only, in this form:
{example}"""

# Without domain labels (the default): QSEF, not the LLM, decides each sub-task's domain, and every label
# the LLM would write costs about seven decoded tokens -- on a CPU, over a second per sub-task.
_SYSTEM_UNLABELLED = """You split a user's message into independent sub-questions, one per distinct request.
Each sub-question must be self-contained (repeat needed context) and keep the user's wording.
Do not answer. Do not invent questions. A message with a single request gives a single sub-question.
Reply with JSON only, in this form:
{example}"""

_EXAMPLE_QUERY = "My father has high blood pressure. Which foods should he avoid, and can he deduct his medical bills?"
_EXAMPLE = {
    "subtasks": [
        {"subtask": "My father has high blood pressure. Which foods should he avoid?", "domain": "medicine"},
        {"subtask": "Can my father deduct his medical bills from his taxes?", "domain": "finance"},
    ]
}


_EXAMPLE_UNLABELLED = {"subtasks": [s["subtask"] for s in _EXAMPLE["subtasks"]]}


def content_tokens(text: str) -> set[str]:
    """The lower-cased content words of ``text`` (stop words left out): what overlap checks compare."""
    return {w for w in _WORD_RE.findall(text.lower()) if w not in _STOP}



class Decomposer:
    """Splits queries with a router LLM, validating and repairing its output.

    Args:
        llm: the router-LLM client.
        domains: allowed domain labels (from the expert registry).
        descriptions: optional ``{domain: description}`` for the prompt.
        max_subtasks: validation limit; longer lists are truncated (repaired).
        max_tokens: generation budget.
        fast_path: allow the shortcuts that skip the LLM: a single question, or a clear split
            (:func:`is_clear_split`, when ``clear_split`` is on too).
        clear_split: accept the clause splitter's parts without the LLM when each is clearly a request.
        min_overlap: a sub-task whose content words overlap the query's less than this is invented.
        labels: ask the LLM for a domain per sub-task (shown as a hint only; routing uses QSEF's domain).
            Off by default: the labels cost decoding time and routing does not use them.
    """

    def __init__(
        self,
        llm: RouterLLM,
        domains: list[str] | tuple[str, ...] = DOMAINS,
        *,
        descriptions: dict[str, str] | None = None,
        max_subtasks: int = 6,
        max_tokens: int = 256,
        fast_path: bool = True,
        clear_split: bool = True,
        min_overlap: float = 0.6,
        labels: bool = False,
    ):
        self.llm = llm
        self.domains = list(dict.fromkeys(domains)) or ["general"]
        self.descriptions = descriptions or {}
        self.max_subtasks = max_subtasks
        self.max_tokens = max_tokens
        self.fast_path = fast_path
        self.clear_split = clear_split
        self.min_overlap = min_overlap
        self.labels = labels

    # -- prompt --------------------------------------------------------------------------------
    def messages(self, query: str) -> list[dict[str, str]]:
        if self.labels:
            desc = "; ".join(f"{d} = {self.descriptions.get(d, d)}" for d in self.domains)
            example = _EXAMPLE
            system = _SYSTEM.format(domains=", ".join(self.domains), descriptions=desc, example=json.dumps(example))
        else:
            example = _EXAMPLE_UNLABELLED
            system = _SYSTEM_UNLABELLED.format(example=json.dumps(example))
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": _EXAMPLE_QUERY},
            {"role": "assistant", "content": json.dumps(example)},
            {"role": "user", "content": query},
        ]

    def output_budget(self, query: str) -> int:
        """Most tokens the LLM may write for ``query``: its sub-tasks restate the query, so a faithful
        decomposition is about as long as the query (~4 characters a token) plus the JSON around it; this
        allows twice that, plus each label's tokens, up to ``max_tokens``. A small LLM that answers the
        question instead of splitting it is cut off there (then the clause splitter takes over, flagged)
        rather than running to ``max_tokens``."""
        labels = 8 * self.max_subtasks if self.labels else 0
        return min(self.max_tokens, 24 + len(query) // 2 + labels)

    # -- entry point ---------------------------------------------------------------------------
    def decompose(self, query: str, *, use_llm: bool = True) -> Decomposition:
        """Decompose ``query``; never raises for LLM trouble (falls back, flagged)."""
        t0 = time.perf_counter()
        query = query.strip()
        parts = split_clauses(query)
        if self.fast_path and (len(parts) == 1 or is_single_question(query)):
            # one request by the cheap checks: a short single question, or a longer message (a role-play
            # brief, code to review) the clause splitter keeps whole -- the small router LLM tends to
            # cut those into pieces, so it is not asked (benchmarks/local_precision.py measures both)
            sub = [SubTask(text=query, domain_hint=domain_hint(query, self.domains))]
            return Decomposition(subtasks=sub, path="fast_path", latency_ms=_ms(t0))
        if self.fast_path and self.clear_split and len(parts) <= self.max_subtasks and is_clear_split(parts):
            subs = [SubTask(text=p, domain_hint=domain_hint(p, self.domains)) for p in parts]
            return Decomposition(subtasks=subs, path="clear_split", latency_ms=_ms(t0))
        if not use_llm:
            return self._fallback(query, "LLM disabled for this call", "", t0, chosen=True)
        raw = ""
        try:
            if self.llm.supports_json_schema:
                raw = self.llm.complete(
                    self.messages(query),
                    json_schema=decomposition_schema(self.domains, self.max_subtasks, labels=self.labels),
                    max_tokens=self.output_budget(query),
                )
            else:
                prefill = '{"subtasks": [{"subtask": "' if self.labels else '{"subtasks": ["'
                raw = self.llm.complete(self.messages(query), prefill=prefill, max_tokens=self.output_budget(query))
        except RouterLLMUnavailableError as exc:
            return self._fallback(query, f"router LLM unavailable: {exc}", raw, t0)
        except RouterLLMError as exc:
            return self._fallback(query, f"router LLM failed: {exc}", raw, t0)
        try:
            subtasks, repaired, notes = self.parse(raw, query)
        except DecompositionError as exc:
            return self._fallback(query, f"invalid LLM output: {exc}", raw, t0)
        if len(subtasks) > len(parts) > 1:
            # more parts than the query has request boundaries: the small LLM cut a request (often a question
            # and its options) in two; the clause splitter's parts are kept (see the module docstring)
            notes.append(f"the LLM's {len(subtasks)} sub-tasks exceed the clause splitter's {len(parts)}: kept those")
            subtasks, repaired = [SubTask(text=c, domain_hint=domain_hint(c, self.domains)) for c in parts], True
        return Decomposition(
            subtasks=subtasks,
            path="repaired" if repaired else "llm",
            flagged=False,
            reason="; ".join(notes),
            llm=self.llm.describe(),
            raw=raw,
            latency_ms=_ms(t0),
        )

    def _fallback(self, query: str, reason: str, raw: str, t0: float, *, chosen: bool = False) -> Decomposition:
        level = logging.INFO if chosen else logging.WARNING
        log.log(level, "decomposition fell back to the clause splitter", extra={"reason": reason[:300]})
        subs = [SubTask(text=c, domain_hint=domain_hint(c, self.domains)) for c in split_clauses(query)]
        return Decomposition(subtasks=subs, path="clause_splitter", flagged=True, reason=reason,
                             llm=self.llm.describe(), raw=raw, latency_ms=_ms(t0))

    # -- validation and repair -----------------------------------------------------------------
    def parse(self, raw: str, query: str) -> tuple[list[SubTask], bool, list[str]]:
        """Validate the LLM output, repairing what can be repaired.

        Returns:
            (sub-tasks, whether anything was repaired, notes on what was repaired).

        Raises:
            DecompositionError: when nothing valid can be recovered.
        """
        notes: list[str] = []
        items = self._load_items(raw, notes)
        qtok = content_tokens(query)
        subtasks: list[SubTask] = []
        for item in items:
            if isinstance(item, str):
                item = {"subtask": item}
                if self.labels:
                    notes.append("bare string item")
            if not isinstance(item, dict):
                notes.append(f"dropped non-object item {type(item).__name__}")
                continue
            text = item.get("subtask", item.get("text", item.get("question")))
            if not isinstance(text, str) or not text.strip():
                notes.append("dropped item without sub-task text")
                continue
            text = " ".join(text.split())
            stok = content_tokens(text)
            if stok and len(stok & qtok) / len(stok) < self.min_overlap:
                notes.append(f"dropped invented sub-task {text[:60]!r}")
                continue
            domain = item.get("domain")
            if not self.labels and domain is None:
                domain = domain_hint(text, self.domains)
            elif domain not in self.domains:
                guess = str(domain).strip().lower() if isinstance(domain, str) else ""
                domain = guess if guess in self.domains else domain_hint(text, self.domains)
                notes.append(f"domain {item.get('domain')!r} mapped to {domain!r}")
            if any(s.text.lower() == text.lower() for s in subtasks):
                notes.append("dropped duplicate sub-task")
                continue
            subtasks.append(SubTask(text=text, domain_hint=domain))
        if not subtasks:
            raise DecompositionError("no valid sub-task in the output")
        if len(subtasks) > self.max_subtasks:
            notes.append(f"truncated {len(subtasks)} sub-tasks to {self.max_subtasks}")
            subtasks = subtasks[: self.max_subtasks]
        subtasks = _drop_cut_off(subtasks, notes)
        clauses = split_clauses(query)
        # A sub-task that holds two or more of the splitter's requests merged them: split it. Request words
        # ("please explain", "show me") do not count: the LLM often drops them.
        if len(clauses) > len(subtasks):
            split: list[SubTask] = []
            for s in subtasks:
                stok = content_tokens(s.text)
                inside = [c for c in clauses if _topic(c) and len(_topic(c) & stok) / len(_topic(c)) >= 0.8]
                if len(inside) >= 2:
                    notes.append(f"split merged sub-task {s.text[:60]!r} into {len(inside)}")
                    split.extend(SubTask(text=c, domain_hint=domain_hint(c, self.domains)) for c in inside)
                else:
                    split.append(s)
            subtasks = split[: self.max_subtasks]
        # Coverage: a request the clause splitter sees that no sub-task covers was left out by the LLM.
        covered = set().union(*(content_tokens(s.text) for s in subtasks))
        for clause in clauses:
            ctok = content_tokens(clause)
            if ctok and len(ctok & covered) / len(ctok) < 0.5 and len(subtasks) < self.max_subtasks:
                subtasks.append(SubTask(text=clause, domain_hint=domain_hint(clause, self.domains)))
                covered |= ctok
                notes.append(f"added left-out clause {clause[:60]!r}")
        return _drop_cut_off(subtasks, notes), bool(notes), notes

    @staticmethod
    def _load_items(raw: str, notes: list[str]) -> list[Any]:
        text = raw.strip()
        if text.startswith("```"):
            text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
            notes.append("stripped code fence")
        data: Any = None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = _repair_json(text)
            if data is None:
                pairs = re.findall(r'"subtask"\s*:\s*"((?:[^"\\]|\\.)+)"(?:\s*,\s*"domain"\s*:\s*"([^"]*)")?', text)
                if not pairs:
                    raise DecompositionError(f"output is not JSON: {text[:120]!r}") from None
                notes.append("extracted sub-tasks from broken JSON")
                return [{"subtask": s, "domain": d or None} for s, d in pairs]
            notes.append("closed or extracted JSON")
        if isinstance(data, dict):
            for key in ("subtasks", "sub_tasks", "tasks", "questions"):
                if isinstance(data.get(key), list):
                    if key != "subtasks":
                        notes.append(f"used key {key!r}")
                    return data[key]
            if "subtask" in data:
                notes.append("single object instead of a list")
                return [data]
            raise DecompositionError(f"JSON object without 'subtasks': keys {sorted(data)[:5]}")
        if isinstance(data, list):
            notes.append("bare list instead of an object with 'subtasks'")
            return data
        raise DecompositionError(f"JSON of type {type(data).__name__}, expected an object with 'subtasks'")


_COUNT_WORD_RE = re.compile(r"^(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|few|some|several)$")


def is_clear_split(parts: list[str]) -> bool:
    """Whether the clause splitter's ``parts`` are clearly separate requests, so the LLM need not be asked.

    Each part must be a request (:func:`router.clauses.is_request`: a question, or led by a question
    word or an imperative verb) with a topic of its own: at least one content word beyond the words
    that frame a request and counts, two when it does not end with ``?``. A part like "List three
    impacts." has no topic of its own (it continues the sentence before it), so such a split is
    unclear and the LLM decides.

    Example:
        >>> is_clear_split(["What is EBITDA?", "How do I reverse a linked list in C?"])
        True
        >>> is_clear_split(["How did the Alps shape farming in Europe?", "List three impacts."])
        False
    """
    if len(parts) < 2:
        return False
    for part in (p.strip() for p in parts):
        topic = {w for w in _topic(part) if not _COUNT_WORD_RE.match(w)}
        if not is_request(part) or len(topic) < (1 if part.endswith("?") else 2):
            return False
    return True


def _drop_cut_off(subtasks: list[SubTask], notes: list[str]) -> list[SubTask]:
    """Without the sub-tasks that are the start of another one (a cut-off copy: "Fix this error:" beside
    "Fix this error: TypeError …" asks nothing the other does not); the longer one takes the copy's place.
    A complete question ("What is GDP?" beside "What is GDP growth?") is never a cut-off copy."""
    heads = [_norm(s.text) for s in subtasks]
    out: list[SubTask] = []
    used: set[int] = set()
    for i, s in enumerate(subtasks):
        if i in used:
            continue
        longer = None if s.text.rstrip().endswith(("?", ".")) else next(
            (j for j, o in enumerate(heads) if j != i and j not in used and o.startswith(heads[i] + " ")), None)
        if longer is None:
            out.append(s)
            continue
        notes.append(f"dropped cut-off copy {s.text[:60]!r}")
        used.add(longer)
        out.append(subtasks[longer])
    return out


def _norm(text: str) -> str:
    """Lower-cased words only: how cut-off copies are compared."""
    return " ".join(_WORD_RE.findall(text.lower()))


def _topic(text: str) -> set[str]:
    """Content words without the words that frame a request."""
    return content_tokens(text) - REQUEST_WORDS


def _repair_json(text: str) -> Any:
    """Recover JSON from text with chatter around it or a truncated tail; None if hopeless."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    body = text[start:]
    # Try the longest prefix that ends at a closing bracket, then closing a truncated structure.
    for end in range(len(body), 0, -1):
        if body[end - 1] in "}]":
            try:
                return json.loads(body[:end])
            except json.JSONDecodeError:
                continue
    for suffix in ('"}]}', '}]}', '"]}', ']}', '"}]', '}]', '"]', ']', '"}', '}'):
        try:
            return json.loads(body + suffix)
        except json.JSONDecodeError:
            continue
    return None


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
