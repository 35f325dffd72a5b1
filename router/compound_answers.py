"""Answer-graded compound questions: two or three gold-answered multiple-choice questions of different
domains joined into one message the way people write, scored part by part — decomposition, routing and
answering (``qsef eval answers --compound``).

Building (:func:`build_compound_rows`, deterministic for a seed). A compound row takes k = 2 or 3 answer
rows of k different domains and joins them as people do: "… Also, …", "… And …", "Second question: …",
a numbered list "1) … 2) …", a lead-in such as "Two things: …". What the router sees of a part:

* a *self-contained* question — it ends with "?" and does not point at its options ("which of the
  following", "all of the above", a blank) — is written alone, the way one asks it;
* any other question is written with its options after it on the same line, ``(A) … (B) …``: the choices
  stay with their question ("Which of the following is true?" asks nothing without them).

Whitespace inside a part (the newlines of a code snippet) is collapsed, so every part is one line, and a
part longer than ``max_part_chars`` (default 400, the decomposition schema's cap on one sub-task) is not
used: a conforming router LLM could not return it whole. Each part keeps its original row and its
character span in the message (:class:`CompoundPart`).

Scoring (:func:`evaluate_compound`), part by part:

* decomposition — the row's sub-task count against its number of parts; each part is matched one-to-one
  to a sub-task (the assignment with the largest total token overlap: the Dice coefficient of content
  words, option letters left out); a part left without a sub-task, or whose sub-task holds less than
  ``min_coverage`` of the part's content words, is *lost* (a sub-task that asks the part's question with
  another part's words attached is matched: what the junk costs shows in the answers);
* routing — the domain QSEF dispatches the matched sub-task on (argmax TE over the router's registry, not
  the router LLM's domain hint) against the part's domain, the same part routed alone, and the set of
  domains dispatched over all sub-tasks against the gold set (the hint's domain set is reported beside it);
* answering (optional: :class:`AnswerSetup`) — QSEF picks an expert of the answer fleet for the matched
  sub-task, cross-fitted as in :func:`router.answers.evaluate_answers` (a part is routed with the answer
  matrix of the *other* folds' questions as ``C_model`` history), and that expert answers the part's choices
  by log-likelihood with the sub-task's text as the question (:func:`answer_text`); a lost part is wrong.
  The same part asked alone — its original row, routed the same way — is the reference, so the compound
  penalty is ``alone - compound``. Scores are cached by :class:`experts.answers.AnswerScorer`; a sub-task
  that reproduces its question is the cached alone question.

Example:
    >>> rows = build_compound_rows(load_answer_rows("graded.jsonl"), n=40, parts="mixed", seed=0)
    >>> rows[0].message
    'What is the capital of Chad? Also, which of the following is a tort? (A) trespass (B) a debt'
    >>> router = Router.from_settings(settings, llm=make_router_llm("none"))
    >>> evaluate_compound(rows, decomposer=router.decomposer, scorer=router.scorer)["domain_set_accuracy"]
"""

from __future__ import annotations

import logging
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.domains import DOMAINS
from core.jsonl import JSONLError, iter_jsonl
from experts.answers import LETTERS, MCQuestion, ModelLoadError, PromptFormat, expert_scorer
from router.answers import AnswerRowError, check_answer_row, read_answer_file
from router.decompose import Decomposer, Decomposition, content_tokens

if TYPE_CHECKING:
    from core.settings import Settings
    from experts.registry import ExpertRegistry
    from router.scoring import RegistryScorer

log = logging.getLogger(__name__)

__all__ = ["JOINERS", "AnswerSetup", "CompoundBuildError", "CompoundPart", "CompoundRow", "Match", "PartScore",
           "RowScore", "answer_parts", "answer_text", "build_compound_rows", "coverage", "evaluate_compound", "is_compound_file",
           "is_self_contained", "load_compound_rows", "match_parts", "options_text", "overlap", "render_part",
           "score_row", "summarize"]

MAX_PART_CHARS = 400  # router.decompose.decomposition_schema: a sub-task is at most 400 characters
MAX_PARTS = 6         # RouterSettings.max_subtasks' default

# A question that points at its options cannot be asked without them.
_OPTION_REF_RE = re.compile(
    r"\b(?:following|above|below|these|listed|statements?|options?|choices?|none of|all of)\b|_{2,}", re.I)
_OPTION_MARK_RE = re.compile(r"\([A-J]\)")
# Words after which "Also," / "And" may lower-case a question's first letter ("Also, what is …").
_LOWERABLE = frozenset((
    "what", "which", "how", "why", "when", "where", "who", "whom", "whose", "is", "are", "was", "were", "can",
    "could", "should", "would", "will", "does", "do", "did", "has", "have", "in", "on", "for", "if", "a", "an",
    "the", "under", "according", "suppose", "consider", "given",
))


class CompoundBuildError(ValueError):
    """Compound questions cannot be built from these rows (the message says why and what is needed)."""


# -- rows ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompoundPart:
    """One question inside a compound message: its original answer row, and where it stands in the message.

    ``text`` is the part as written (``message[span[0]:span[1]]``); ``options_inline`` says whether its
    options are written after it.
    """

    question: str
    choices: tuple[str, ...]
    answer: int
    domain: str
    id: str
    text: str
    span: tuple[int, int]
    options_inline: bool

    def question_alone(self) -> MCQuestion:
        """The part asked on its own: its original row."""
        return MCQuestion(self.question, self.choices, self.answer, self.domain, self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "choices": list(self.choices), "answer": self.answer,
                "domain": self.domain, "text": self.text, "span": list(self.span),
                "options_inline": self.options_inline}


@dataclass(frozen=True)
class CompoundRow:
    """A message of two or more parts, in message order."""

    id: str
    message: str
    parts: tuple[CompoundPart, ...]
    joiner: str = ""

    @property
    def domains(self) -> list[str]:
        return [p.domain for p in self.parts]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "message": self.message, "joiner": self.joiner,
                "parts": [p.to_dict() for p in self.parts]}


def _clean_option(choice: str) -> str:
    c = " ".join(choice.split())
    # a sentence-like option's full stop would end the message's sentence there ("(A) … analysis. (B) …")
    return c[:-1] if c.endswith(".") and not re.search(r"\b\w\.$", c) else c


def options_text(choices: Sequence[str]) -> str:
    """``"(A) first (B) second"``: a part's options as written after its question."""
    return " ".join(f"({LETTERS[i]}) {_clean_option(c)}" for i, c in enumerate(choices))


def is_self_contained(question: str) -> bool:
    """A question one can ask without its options: it ends with "?" and points at none of them."""
    q = " ".join(question.split())
    return q.endswith("?") and not _OPTION_REF_RE.search(q)


def render_part(question: str, choices: Sequence[str]) -> tuple[str, bool]:
    """A question as written in a compound message (one line) and whether its options come with it."""
    q = " ".join(question.split())
    if is_self_contained(q):
        return q, False
    return f"{q} {options_text(choices)}", True


@dataclass(frozen=True)
class Joiner:
    """How k parts become one message: ``pieces`` (k + 1 strings: lead-in, separators, tail) around the
    parts; ``lower`` says per part whether its first letter is lower-cased after a connective."""

    name: str
    pieces: tuple[str, ...]
    lower: tuple[bool, ...]

    def join(self, texts: Sequence[str]) -> tuple[str, list[str], list[tuple[int, int]]]:
        """The message, each part as written, and each part's span."""
        if len(texts) != len(self.lower):
            raise ValueError(f"joiner {self.name!r} joins {len(self.lower)} parts, got {len(texts)}")
        msg, written, spans = self.pieces[0], [], []
        for i, t in enumerate(texts):
            t = _lower_first(t) if self.lower[i] else t
            start = len(msg)
            msg += t
            written.append(t)
            spans.append((start, len(msg)))
            nxt = self.pieces[i + 1]
            if nxt and not nxt.startswith("\n") and t[-1] not in ".?!:":
                msg += "."  # end the part's sentence before the next words
            msg += nxt
        return msg, written, spans


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0].lower()
    return text[0].lower() + text[1:] if first in _LOWERABLE and text[1:2].islower() else text


JOINERS: dict[int, tuple[Joiner, ...]] = {
    2: (
        Joiner("also", ("", " Also, ", ""), (False, True)),
        Joiner("and", ("", " And ", ""), (False, True)),
        Joiner("second_question", ("", "\nSecond question: ", ""), (False, False)),
        Joiner("numbered", ("1) ", "\n2) ", ""), (False, False)),
        Joiner("two_things", ("Two things: ", " And ", ""), (False, True)),
        Joiner("another", ("", " Another one: ", ""), (False, False)),
        Joiner("first_second", ("I have two questions. First, ", " Second, ", ""), (True, True)),
        Joiner("plain", ("", " ", ""), (False, False)),
    ),
    3: (
        Joiner("also", ("", " Also, ", " And ", ""), (False, True, True)),
        Joiner("numbered", ("1) ", "\n2) ", "\n3) ", ""), (False, False, False)),
        Joiner("three_things", ("Three things: ", " Also, ", " And finally, ", ""), (False, True, True)),
        Joiner("second_third", ("", "\nSecond question: ", "\nThird question: ", ""), (False, False, False)),
        Joiner("first_second_third", ("A few questions. First, ", " Second, ", " Third, ", ""), (True, True, True)),
        Joiner("plain", ("", " ", " ", ""), (False, False, False)),
    ),
}
"""The joiners per number of parts; a compound row draws one (seeded)."""


def _compound(rid: str, rows: Sequence[dict[str, Any]], joiner: Joiner) -> CompoundRow:
    rendered = [render_part(r["question"], r["choices"]) for r in rows]
    message, written, spans = joiner.join([t for t, _ in rendered])
    parts = tuple(
        CompoundPart(question=r["question"], choices=tuple(r["choices"]), answer=int(r["answer"]), domain=r["domain"],
                     id=str(r.get("id", "")), text=w, span=s, options_inline=inline)
        for r, (_, inline), w, s in zip(rows, rendered, written, spans, strict=True)
    )
    return CompoundRow(rid, message, parts, joiner.name)


def build_compound_rows(rows: Sequence[dict[str, Any]], *, n: int | None = None, parts: int | str = "mixed",
                        seed: int = 0, max_part_chars: int = MAX_PART_CHARS) -> list[CompoundRow]:
    """Compound questions from validated answer rows (:func:`router.answers.load_answer_rows`).

    Each compound row draws k domains (2, 3, or either for ``"mixed"``, capped at the number of domains
    present), one row of each, and a joiner from :data:`JOINERS`. A domain's rows are used in a shuffled
    order and reused (reshuffled) only once all of them have been used.

    Args:
        n: compound rows to build (default: about one use of every usable row).
        parts: ``2``, ``3`` or ``"mixed"``.
        seed: the same rows, ``n``, ``parts`` and seed give the same compound rows.
        max_part_chars: rows whose part would be longer are not used.

    Raises:
        CompoundBuildError: ``parts`` is not 2, 3 or mixed; fewer than 2 domains (3 for ``parts=3``) have
            usable rows; ``n`` is below 1.
    """
    k_fixed = {"2": 2, "3": 3, "mixed": None}.get(str(parts), 0)
    if k_fixed == 0:
        raise CompoundBuildError(f"parts must be 2, 3 or mixed, got {parts!r}")
    usable = [r for r in rows if len(render_part(r["question"], r["choices"])[0]) <= max_part_chars]
    order = {d: i for i, d in enumerate(DOMAINS)}
    by: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(usable, key=lambda r: (order.get(r["domain"], len(order)), r["domain"])):
        by.setdefault(r["domain"], []).append(r)
    dropped = len(rows) - len(usable)
    need = k_fixed or 2
    if len(by) < need:
        have = ", ".join(f"{d} ({len(v)})" for d, v in by.items()) or "none"
        raise CompoundBuildError(
            f"compound questions of {need} parts need usable rows of at least {need} different domains; "
            f"the rows have {have}" + (f" ({dropped} rows left out: a part over {max_part_chars} characters)"
                                       if dropped else ""))
    if n is None:
        n = max(1, round(len(usable) / (k_fixed or 2.5)))
    if n < 1:
        raise CompoundBuildError(f"n must be at least 1, got {n}")
    rng = random.Random(seed)
    decks: dict[str, list[dict[str, Any]]] = {d: [] for d in by}
    domains = list(by)

    def draw(d: str) -> dict[str, Any]:
        if not decks[d]:
            decks[d] = list(by[d])
            rng.shuffle(decks[d])
        return decks[d].pop()

    out = []
    for i in range(n):
        k = min(k_fixed or rng.choice((2, 3)), len(domains))
        picked = [draw(d) for d in rng.sample(domains, k)]
        out.append(_compound(f"compound-s{seed}-{i}", picked, rng.choice(JOINERS[k])))
    return out


# -- ready-made rows -------------------------------------------------------------------------------------

def is_compound_file(path: str | Path) -> bool:
    """Whether the first row of a JSONL file is a compound row (an object with ``parts``)."""
    try:
        for _, obj in iter_jsonl(path):
            return isinstance(obj, dict) and "parts" in obj
    except JSONLError:
        return False
    return False


def _check_span(span: Any, message: str, path: str | Path, n: int, k: int) -> tuple[int, int]:
    if (not isinstance(span, list) or len(span) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
        raise AnswerRowError(path, n, "span", f'parts[{k}]: "span" must be [start, end], two integers')
    s, e = span
    if not 0 <= s < e <= len(message):
        raise AnswerRowError(path, n, "span-out-of-range",
                             f"parts[{k}]: span [{s}, {e}] is not inside the message (0..{len(message)})")
    return s, e


def _check_compound(obj: Any, path: str | Path, n: int, domains: Sequence[str], max_parts: int) -> CompoundRow:
    if not isinstance(obj, dict):
        raise AnswerRowError(path, n, "not-an-object", f"expected a JSON object, got {type(obj).__name__}")
    if "parts" not in obj:
        raise AnswerRowError(path, n, "mixed-rows", 'a row without "parts" in a file of compound rows')
    msg = obj.get("message")
    if not isinstance(msg, str) or not msg.strip():
        raise AnswerRowError(path, n, "message", '"message" must be a non-empty string')
    raw = obj["parts"]
    if not isinstance(raw, list):
        raise AnswerRowError(path, n, "parts", f'"parts" must be a list of objects, got {type(raw).__name__}')
    if len(raw) < 2:
        raise AnswerRowError(path, n, "too-few-parts", f'"parts" has {len(raw)}; a compound question has at least 2')
    if len(raw) > max_parts:
        raise AnswerRowError(path, n, "too-many-parts", f'"parts" has {len(raw)}; at most {max_parts}')
    rid = str(obj.get("id", f"{Path(path).name}:{n}"))
    parts: list[CompoundPart] = []
    for k, p in enumerate(raw):
        if not isinstance(p, dict):
            raise AnswerRowError(path, n, "not-an-object", f"parts[{k}]: expected a JSON object, got {type(p).__name__}")
        try:
            row = check_answer_row(p, path, n, domains)
        except AnswerRowError as exc:
            raise AnswerRowError(path, n, exc.rule, f"parts[{k}]: {exc.detail}") from None
        s, e = _check_span(p.get("span"), msg, path, n, k)
        for j, q in enumerate(parts):
            if s < q.span[1] and q.span[0] < e:
                raise AnswerRowError(path, n, "span-overlap", f"parts[{k}]: span [{s}, {e}] overlaps parts[{j}]'s "
                                                              f"{list(q.span)}")
        text = msg[s:e]
        if "text" in p and p["text"] != text:
            raise AnswerRowError(path, n, "span-text", f'parts[{k}]: "text" {p["text"][:60]!r} is not the message '
                                                       f"at its span ({text[:60]!r})")
        inline = p.get("options_inline")
        if inline is not None and not isinstance(inline, bool):
            raise AnswerRowError(path, n, "options-inline", f'parts[{k}]: "options_inline" must be true or false')
        if inline is None:
            inline = options_text(row["choices"]).lower() in " ".join(text.split()).lower()
        pid = str(p["id"]) if "id" in p else f"{rid}#{k}"
        parts.append(CompoundPart(row["question"], tuple(row["choices"]), row["answer"], row["domain"], pid, text,
                                  (s, e), inline))
    return CompoundRow(rid, msg, tuple(parts), str(obj.get("joiner", "")))


def load_compound_rows(path: str | Path, *, domains: Sequence[str] = DOMAINS,
                       max_parts: int = MAX_PARTS) -> list[CompoundRow]:
    """Validated ready-made compound rows ``{"message", "parts": [{answer row + "span": [start, end]}]}``.

    A part is an answer row (the rules of :func:`router.answers.load_answer_rows`, named with the part:
    ``parts[1]: "answer" 4 is not in 0..3``) plus its ``span`` in the message; an optional ``text`` must be
    the message at that span.

    Raises:
        AnswerRowError: on the first bad line — the answer-row rules, and ``mixed-rows`` (a row without
            ``parts``), ``message``, ``parts``, ``too-few-parts``, ``too-many-parts``, ``span``,
            ``span-out-of-range``, ``span-overlap``, ``span-text``, ``options-inline``, ``malformed-json``,
            ``not-an-object``, ``empty-file``.
        FileNotFoundError: when the file does not exist.
    """
    return read_answer_file(path, lambda obj, n: _check_compound(obj, path, n, domains, max_parts))


# -- matching and scoring ---------------------------------------------------------------------------------

def _match_tokens(text: str) -> set[str]:
    return content_tokens(_OPTION_MARK_RE.sub(" ", text))


def overlap(a: str, b: str) -> float:
    """Dice coefficient of the content words of two texts, in [0, 1] (option letters left out)."""
    ta, tb = _match_tokens(a), _match_tokens(b)
    if not ta or not tb:
        return 0.0
    return 2 * len(ta & tb) / (len(ta) + len(tb))


def coverage(part: str, subtask: str) -> float:
    """Share of the part's content words that the sub-task holds, in [0, 1]."""
    tp = _match_tokens(part)
    return len(tp & _match_tokens(subtask)) / len(tp) if tp else 0.0


@dataclass(frozen=True)
class Match:
    """The sub-task a part was assigned (``None``: none left) with their overlap and coverage, and whether
    the part counts as found there."""

    subtask: int | None
    overlap: float
    coverage: float
    matched: bool


def match_parts(parts: Sequence[str], subtasks: Sequence[str], *, min_coverage: float = 0.5) -> list[Match]:
    """Assign each part one sub-task, one-to-one, maximising the total :func:`overlap`.

    A part left without a sub-task (fewer sub-tasks than parts), or whose sub-task holds less than
    ``min_coverage`` of its content words (:func:`coverage`), is lost (``matched=False``).
    """
    from scipy.optimize import linear_sum_assignment

    out = [Match(None, 0.0, 0.0, False) for _ in parts]
    if not parts or not subtasks:
        return out
    m = np.array([[overlap(p, s) for s in subtasks] for p in parts])  # (P, S)
    for r, c in zip(*linear_sum_assignment(m, maximize=True), strict=True):
        cov = round(coverage(parts[r], subtasks[c]), 4)
        out[r] = Match(int(c), round(float(m[r, c]), 4), cov, cov >= min_coverage)
    return out


@dataclass
class PartScore:
    """How one part fared. The answer fields stay ``None`` until the part is answered."""

    index: int
    domain: str
    subtask: int | None         # the matched sub-task (None: lost)
    overlap: float              # with the assigned sub-task (also when it was too little: lost)
    coverage: float
    routed: str | None          # the domain QSEF dispatched the matched sub-task on (None: lost)
    routed_alone: str | None    # the domain QSEF dispatches the part's question on when asked alone
    expert: str | None = None
    expert_alone: str | None = None
    correct: bool | None = None
    correct_alone: bool | None = None
    verbatim: bool | None = None  # the sub-task reproduced the question (its answer is the alone one's)
    unscored: str = ""            # why the compound answer could not be scored

    @property
    def matched(self) -> bool:
        return self.subtask is not None

    @property
    def domain_ok(self) -> bool:
        return self.routed == self.domain


@dataclass
class RowScore:
    """One compound row: its decomposition, the dispatched domain per sub-task and each part's score."""

    id: str
    path: str
    subtasks: list[str]
    routed: list[str]
    hints: list[str]
    parts: list[PartScore]
    flagged: bool = False
    latency_ms: float = 0.0
    reason: str = ""

    @property
    def count_ok(self) -> bool:
        return len(self.subtasks) == len(self.parts)

    @property
    def domain_set_ok(self) -> bool:
        return set(self.routed) == {p.domain for p in self.parts}

    @property
    def domain_set_ok_hint(self) -> bool:
        return set(self.hints) == {p.domain for p in self.parts}

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "flagged": self.flagged, "subtasks": self.subtasks,
                "routed": self.routed, "hints": self.hints, "count_ok": self.count_ok,
                "domain_set_ok": self.domain_set_ok, "latency_ms": self.latency_ms, "reason": self.reason[:200],
                "parts": [{**{k: v for k, v in vars(p).items() if v is not None and v != ""},
                           "matched": p.matched, "domain_ok": p.domain_ok} for p in self.parts]}


def score_row(row: CompoundRow, subtasks: Sequence[str], routed: Sequence[str], *,
              hints: Sequence[str] | None = None, routed_alone: Sequence[str] | None = None, path: str = "",
              min_coverage: float = 0.5) -> RowScore:
    """Score one decomposition of ``row``: sub-task texts and the domain dispatched on for each.

    Args:
        routed: QSEF's dispatched domain per sub-task (same length as ``subtasks``).
        hints: the decomposer's domain hint per sub-task (default: ``routed``).
        routed_alone: QSEF's domain per part asked alone.
        path: the decomposition path (``fast_path``, ``llm``, ``repaired``, ``clause_splitter``).
    """
    if len(routed) != len(subtasks):
        raise ValueError(f"{len(subtasks)} sub-tasks but {len(routed)} dispatched domains")
    matches = match_parts([p.text for p in row.parts], subtasks, min_coverage=min_coverage)
    parts = [PartScore(index=i, domain=p.domain, subtask=m.subtask if m.matched else None, overlap=m.overlap,
                       coverage=m.coverage, routed=routed[m.subtask] if m.matched else None,
                       routed_alone=routed_alone[i] if routed_alone is not None else None)
             for i, (p, m) in enumerate(zip(row.parts, matches, strict=True))]
    return RowScore(id=row.id, path=path, subtasks=list(subtasks), routed=list(routed),
                    hints=list(hints if hints is not None else routed), parts=parts)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower().strip(" .?!:;,")


def answer_text(part: CompoundPart, subtask: str) -> tuple[str, bool]:
    """The question an expert is asked for a part, and whether it is the part's own question.

    It is the matched sub-task's text without the part's own inline options (the scoring prompt lists the
    choices itself); when what is left is the part's question (up to case, whitespace and end punctuation),
    the original question itself — so a faithful decomposition scores as the question asked alone.
    """
    t = " ".join(subtask.split())
    if part.options_inline:
        opts = options_text(part.choices)
        at = t.lower().find(opts.lower())
        if at >= 0:
            t = " ".join((t[:at] + " " + t[at + len(opts):]).split()).strip()
            t = re.sub(r"\s+([.?!])$", r"\1", t)
    if _norm(t) == _norm(part.question):
        return part.question, True
    return (t or subtask), False


def _rate(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def summarize(scores: Sequence[RowScore]) -> dict[str, Any]:
    """The metrics of a set of scored rows (every rate over rows or over parts, lost parts counting wrong)."""
    parts = [p for s in scores for p in s.parts]
    out: dict[str, Any] = {
        "n": len(scores),
        "n_parts": len(parts),
        "count_accuracy": _rate([s.count_ok for s in scores]),
        "part_match_rate": _rate([p.matched for p in parts]),
        "mean_overlap": round(statistics.fmean([p.overlap for p in parts if p.matched]), 4)
        if any(p.matched for p in parts) else None,
        "domain_accuracy": _rate([p.domain_ok for p in parts]),
        "domain_set_accuracy": _rate([s.domain_set_ok for s in scores]),
        "domain_set_accuracy_hint": _rate([s.domain_set_ok_hint for s in scores]),
    }
    alone = [p for p in parts if p.routed_alone is not None]
    if alone:
        out["domain_accuracy_alone"] = _rate([p.routed_alone == p.domain for p in alone])
    graded = [p for p in parts if p.correct_alone is not None]
    if graded:
        comp = _rate([bool(p.correct) for p in graded])
        solo = _rate([bool(p.correct_alone) for p in graded])
        out["answer_accuracy"] = {
            "n_parts": len(graded), "compound": comp, "alone": solo, "penalty": round(solo - comp, 4),
            "same_expert": _rate([p.expert == p.expert_alone for p in graded if p.matched]),
            "verbatim": _rate([bool(p.verbatim) for p in graded if p.matched]),
            "unscored": sum(bool(p.unscored) for p in graded),
        }
    return out


def _grouped(scores: Sequence[RowScore]) -> dict[str, Any]:
    by_path: dict[str, list[RowScore]] = {}
    by_parts: dict[str, list[RowScore]] = {}
    for s in scores:
        by_path.setdefault(s.path, []).append(s)
        by_parts.setdefault(str(len(s.parts)), []).append(s)
    per_domain: dict[str, list[PartScore]] = {}
    for p in (p for s in scores for p in s.parts):
        per_domain.setdefault(p.domain, []).append(p)
    dom = {}
    for d, ps in per_domain.items():
        dom[d] = {"n_parts": len(ps), "part_match_rate": _rate([p.matched for p in ps]),
                  "domain_accuracy": _rate([p.domain_ok for p in ps])}
        if all(p.routed_alone is not None for p in ps):
            dom[d]["domain_accuracy_alone"] = _rate([p.routed_alone == d for p in ps])
        graded = [p for p in ps if p.correct_alone is not None]
        if graded:
            dom[d]["answer_compound"] = _rate([bool(p.correct) for p in graded])
            dom[d]["answer_alone"] = _rate([bool(p.correct_alone) for p in graded])
    return {"by_path": {k: summarize(v) for k, v in sorted(by_path.items())},
            "by_parts": {k: summarize(v) for k, v in sorted(by_parts.items())},
            "per_domain": {d: dom[d] for d in sorted(dom, key=lambda d: (
                DOMAINS.index(d) if d in DOMAINS else len(DOMAINS), d))}}


# -- answering ------------------------------------------------------------------------------------------

@dataclass
class AnswerSetup:
    """The answer fleet and how it answers.

    Args:
        formats: expert (model-store name) -> prompt format.
        registry: the answer fleet's registry (its experts' ``cost`` and ``size_params`` are what QSEF sees),
            e.g. :func:`experts.registry.capability_fleet`.
        cv: folds of the cross-fitted QSEF choice.
        encoder: the sentence encoder QSEF uses (default: the process encoder of ``settings``).
        cache_dir: override of the answer-score cache (``$QSEF_HOME/cache/answers``).
    """

    formats: dict[str, PromptFormat]
    registry: ExpertRegistry
    settings: Settings
    cv: int = 5
    encoder: Any = None
    cache_dir: Path | None = None
    progress: bool = False


def answer_parts(scores: Sequence[RowScore], rows: Sequence[CompoundRow], setup: AnswerSetup) -> dict[str, Any]:
    """Fill in the answer fields of every part of ``scores`` (see the module docstring).

    Returns:
        what the run used: ``formats``, ``experts``, ``errors`` (expert -> why it was not scored),
        ``n_questions``, ``cv_folds`` (or a ``note``), ``costs``, ``mean_cost`` and ``share`` of the chosen
        experts, compound and alone.
    """
    from qsef.encoder import get_encoder
    from router.answer_routing import folds
    from router.answers import answer_matrix, qsef_fold_scorer
    from router.scoring import RegistryScorer

    pairs = [(s, ps, cp) for s, r in zip(scores, rows, strict=True) for ps, cp in zip(s.parts, r.parts, strict=True)]
    src: dict[str, int] = {}
    src_rows: list[dict[str, Any]] = []
    for _, _, cp in pairs:
        q = cp.question_alone()
        if q.key not in src:
            src[q.key] = len(src_rows)
            src_rows.append({"question": q.question, "choices": list(q.choices), "answer": q.answer,
                             "domain": q.domain, "id": q.id})
    matrix = answer_matrix(src_rows, setup.formats, settings=setup.settings, cache_dir=setup.cache_dir,
                           progress=setup.progress)
    info: dict[str, Any] = {"formats": matrix.formats, "errors": dict(matrix.errors), "n_questions": len(src_rows),
                            "experts": matrix.experts}
    if not matrix.experts:
        info["note"] = "no expert could be scored"
        return info
    specs = {s.name: s for s in setup.registry.list(enabled_only=True)}
    unknown = [m for m in matrix.experts if m not in specs]
    if unknown:
        raise ValueError(f"experts {unknown} are not in the answer registry; registered: {sorted(specs)}")
    n = len(src_rows)
    texts = [q.question for q in matrix.questions]
    compound: list[tuple[PartScore, CompoundPart, int, str, bool]] = []  # part, its row, source index, text
    for s, ps, cp in pairs:
        if ps.subtask is not None:
            text, verbatim = answer_text(cp, s.subtasks[ps.subtask])
            compound.append((ps, cp, src[cp.question_alone().key], text, verbatim))
            texts.append(text)
    encoder = setup.encoder or get_encoder(setup.settings)
    emb = np.asarray(encoder.encode(texts), dtype=np.float32)
    scorer = RegistryScorer(setup.registry, settings=setup.settings, encoder=encoder)
    choose = qsef_fold_scorer(scorer, texts, emb, matrix.correct, matrix.experts)
    k = min(setup.cv, n // 2)
    test_folds = [f.astype(np.int64) for f in folds(list(matrix.domains), k) if len(f)] if k >= 2 else []
    crossfit = len(test_folds) >= 2
    if crossfit:
        info["cv_folds"] = len(test_folds)
    else:  # too few questions to hold any out: QSEF chooses without answer history (reported)
        test_folds = [np.arange(n)]
        info["note"] = f"{n} question(s): too few to cross-fit; QSEF chose without answer history"
    fold_of = np.zeros(n, dtype=np.int64)
    for f, idx in enumerate(test_folds):
        fold_of[idx] = f
    comp_src = np.array([c[2] for c in compound], dtype=np.int64)
    choice = np.zeros(len(texts), dtype=np.int64)
    for f, test in enumerate(test_folds):
        train = np.setdiff1d(np.arange(n), test) if crossfit else np.zeros(0, dtype=np.int64)
        idx = np.concatenate([test, n + np.flatnonzero(fold_of[comp_src] == f)])
        te, _ = choose(train, idx)
        choice[idx] = te.argmax(1)
    for _, ps, cp in pairs:
        i = src[cp.question_alone().key]
        ps.expert_alone = matrix.experts[choice[i]]
        ps.correct_alone = bool(matrix.correct[i, choice[i]])
        if ps.subtask is None:
            ps.correct = False
    todo: dict[str, list[tuple[PartScore, MCQuestion]]] = {}
    for c, (ps, cp, i, text, verbatim) in enumerate(compound):
        j = int(choice[n + c])
        ps.expert, ps.verbatim = matrix.experts[j], verbatim
        if verbatim:
            ps.correct = bool(matrix.correct[i, j])
        else:
            todo.setdefault(ps.expert, []).append((ps, MCQuestion(text, cp.choices, cp.answer, cp.domain, cp.id)))
    for expert, items in todo.items():
        sc = expert_scorer(expert, settings=setup.settings, registry=setup.registry, cache_dir=setup.cache_dir)
        try:
            pred = sc.predict([q for _, q in items], setup.formats[expert], progress=setup.progress)
            for (ps, q), a in zip(items, pred, strict=True):
                ps.correct = bool(a == q.answer)
        except ModelLoadError as exc:  # counted wrong, and said so
            log.error("compound answers not scored", extra={"expert": expert, "error": str(exc)[:300]})
            info["errors"][expert] = str(exc)
            for ps, _ in items:
                ps.correct, ps.unscored = False, str(exc)[:200]
        finally:
            sc.unload()
    costs = {m: float(specs[m].cost) for m in matrix.experts}
    graded = [ps for _, ps, _ in pairs]
    info["costs"] = costs
    info["mean_cost"] = {
        "compound": round(statistics.fmean([costs[p.expert] for p in graded if p.expert]), 4)
        if any(p.expert for p in graded) else None,
        "alone": round(statistics.fmean([costs[p.expert_alone] for p in graded]), 4),
    }
    info["share"] = {"compound": dict(Counter(p.expert for p in graded if p.expert)),
                     "alone": dict(Counter(p.expert_alone for p in graded))}
    return info


# -- the evaluation ---------------------------------------------------------------------------------------

def evaluate_compound(rows: Sequence[CompoundRow], *, decomposer: Decomposer, scorer: RegistryScorer,
                      use_llm: bool = True, concurrency: int = 1, answers: AnswerSetup | None = None,
                      min_coverage: float = 0.5, keep_rows: bool = False) -> dict[str, Any]:
    """Decompose, route and (with ``answers``) answer every compound row; the report of the run.

    Args:
        decomposer: the router's decomposer (``Router.from_settings(...).decomposer``).
        scorer: the router's QSEF scorer; the dispatched domain of a text is its argmax-TE expert's domain.
        use_llm: false = the deterministic clause splitter (and fast path) only.
        concurrency: rows decomposed at once (an HTTP router LLM batches concurrent requests).
        answers: the answer fleet; ``None`` scores decomposition and routing only (no expert model is loaded).
        min_coverage: the share of a part's content words its sub-task must hold (else the part is lost).
        keep_rows: include every row's decomposition and part scores.

    Returns:
        :func:`summarize`'s metrics over all rows, plus ``by_path``, ``by_parts``, ``per_domain``, ``paths``,
        ``latency_ms``, ``wall_s``, ``llm``, ``answers`` (what the answer run used) and, with ``keep_rows``,
        ``rows``.
    """
    def one(row: CompoundRow) -> Decomposition:
        return decomposer.decompose(row.message, use_llm=use_llm)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        decs = list(pool.map(one, rows))
    sub_texts = [s.text for d in decs for s in d.subtasks]
    alone_texts = [p.question for r in rows for p in r.parts]
    res = scorer.score(sub_texts + alone_texts)
    dispatched = [scorer.spec(res.names[j]).domain for j in res.best()]
    scores, at, solo = [], 0, len(sub_texts)
    for row, dec in zip(rows, decs, strict=True):
        k, m = len(dec.subtasks), len(row.parts)
        s = score_row(row, [st.text for st in dec.subtasks], dispatched[at:at + k],
                      hints=[st.domain_hint for st in dec.subtasks], routed_alone=dispatched[solo:solo + m],
                      path=dec.path, min_coverage=min_coverage)
        s.flagged, s.latency_ms, s.reason = dec.flagged, dec.latency_ms, dec.reason
        scores.append(s)
        at, solo = at + k, solo + m
    info = answer_parts(scores, rows, answers) if answers is not None and rows else None
    lat = [s.latency_ms for s in scores] or [0.0]
    out: dict[str, Any] = {
        **summarize(scores),
        **_grouped(scores),
        "paths": dict(Counter(s.path for s in scores)),
        "latency_ms": {"p50": round(statistics.median(lat), 2), "mean": round(statistics.fmean(lat), 2),
                       "max": round(max(lat), 2)},
        "wall_s": round(time.perf_counter() - t0, 2),
        "llm": decomposer.llm.describe() if use_llm else "none (clause splitter)",
        "min_coverage": min_coverage,
        "answers": info,
    }
    if keep_rows:
        out["rows"] = [{"message": r.message, "part_ids": [p.id for p in r.parts], **s.to_dict()}
                       for r, s in zip(rows, scores, strict=True)]
    return out
