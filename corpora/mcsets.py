"""Multiple-choice evaluation sets with gold answers, in styles other than MMLU's exam questions.

Rows are ``qsef eval answers`` rows: ``{"id", "question", "choices", "answer", "domain", "source"}``.

* **BIG-bench** (PyPI sdist ``bigbench==1.0.0``, Apache-2.0; pinned in ``corpora.assets.EVAL_WHEELS``):
  three multiple-choice tasks whose topic is one of our domains — ``code_line_description`` (what a
  line of Python does; code, 60), ``human_organs_senses`` (medicine, 42), ``general_knowledge``
  (general, 70). The choices come from each example's ``target_scores`` (score 1 = gold) and are put
  in a fixed pseudo-random order (seeded by the question), because the task files often list the gold
  answer first and small models prefer the letter A.
* **BSD quiz(6)** (Debian ``bsdgames``, BSD-3-Clause; pinned in ``corpora.assets.DEBS``): the
  question/answer pairs of 4.4BSD's ``quiz`` game turned into four-way multiple choice, the three
  distractors drawn (seeded) from the other answers of the same file — Uniform Commercial Code
  section titles (``ucc``; law: "Which is the title of UCC section 2-314?"), capitals of the countries of
  Africa, America, Asia and Europe and chemical element symbols (general). Short factual questions,
  nothing like MMLU's style.

Example:
    >>> rows = load_answer_set(settings, "bigbench")
    >>> rows[0]["domain"], rows[0]["choices"][rows[0]["answer"]]
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from core.settings import Settings
from corpora import assets

BIGBENCH_TASKS: dict[str, str] = {
    "code_line_description": "code",
    "human_organs_senses": "medicine",
    "general_knowledge": "general",
}
_BB_ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks"

QUIZ_FILES: dict[str, tuple[str, str]] = {
    # file -> (domain, question template with {q})
    "ucc": ("law", "Under the Uniform Commercial Code (UCC), which is the title of section {q}?"),
    "africa": ("general", "What is the capital of {q}?"),
    "america": ("general", "What is the capital of {q}?"),
    "asia": ("general", "What is the capital of {q}?"),
    "europe": ("general", "What is the capital of {q}?"),
    "elements": ("general", "Which chemical element has the symbol {q}?"),
}
_QUIZ_DIR = "usr/share/games/bsdgames/quiz"

ANSWER_SETS = ("mmlu", "bigbench", "bsdquiz")


def _rng(*parts: str) -> random.Random:
    return random.Random(int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16], 16))


def _shuffled(question: str, choices: list[str], gold: int) -> tuple[list[str], int]:
    order = list(range(len(choices)))
    _rng("order", question).shuffle(order)
    return [choices[i] for i in order], order.index(gold)


def load_bigbench(settings: Settings, tasks: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows of the BIG-bench multiple-choice tasks in ``tasks`` (task -> domain; default
    :data:`BIGBENCH_TASKS`). Downloads and extracts the pinned sdist on first use."""
    tasks = tasks or BIGBENCH_TASKS
    assets.ensure_wheel(settings, "bigbench")
    members = [f"{_BB_ROOT}/{t}/task.json" for t in tasks]
    rows = []
    for (task, domain), path in zip(tasks.items(), assets.extract_sdist_members(settings, "bigbench", members),
                                    strict=True):
        for i, ex in enumerate(json.loads(path.read_text(encoding="utf-8"))["examples"]):
            ts = ex.get("target_scores") or {}
            golds = [k for k, v in ts.items() if v == 1]
            if len(golds) != 1 or not 2 <= len(ts) <= 10:  # one gold; letters A-J at most
                continue
            q = ex["input"].strip()
            if task == "code_line_description":
                q = f"What does this Python code do?\n\n{ex['input'].rstrip()}"
            choices = [str(c) for c in ts]
            choices, gold = _shuffled(q, choices, choices.index(golds[0]))
            rows.append({"id": f"bigbench:{task}:{i}", "question": q, "choices": choices, "answer": gold,
                         "domain": domain, "source": f"bigbench:{task}"})
    return rows


_BRACKET = re.compile(r"\[([^\[\]|]*)(?:\|[^\[\]]*)?\]")


def _quiz_text(field: str) -> str:
    """The first spelling of a quiz(6) answer: ``{opt}`` kept without braces, ``[a|b]`` -> ``a``,
    ``x|y`` -> ``x``."""
    first = field.split("|", 1)[0] if "[" not in field else field
    out = _BRACKET.sub(lambda m: m.group(1), first)
    out = out.split("|", 1)[0]
    return re.sub(r"\s+", " ", out.replace("{", "").replace("}", "")).strip()


def load_bsd_quiz(settings: Settings, files: dict[str, tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Four-way multiple-choice rows built from the quiz(6) files (see the module docstring)."""
    files = files or QUIZ_FILES
    root = assets.ensure_deb(settings, "bsdgames") / _QUIZ_DIR
    rows = []
    for name, (domain, template) in files.items():
        pairs = []
        for line in (root / name).read_text(encoding="latin-1").splitlines():
            parts = line.split(":")
            if len(parts) < 2 or line.startswith("#"):
                continue
            if name == "elements":  # symbol:number:weight:name
                q, a = _quiz_text(parts[0]), _quiz_text(parts[-1])
            else:
                q, a = _quiz_text(parts[0]), _quiz_text(parts[1])
            if q and a:
                pairs.append((q, a))
        answers = sorted({a for _, a in pairs})
        for i, (q, a) in enumerate(pairs):
            others = [x for x in answers if x != a]
            if len(others) < 3:
                continue
            question = template.format(q=q)
            distract = _rng("distractors", name, question).sample(others, 3)
            choices, gold = _shuffled(question, [a, *distract], 0)
            rows.append({"id": f"bsdquiz:{name}:{i}", "question": question, "choices": choices, "answer": gold,
                         "domain": domain, "source": f"bsdquiz:{name}"})
    return rows


def load_answer_set(settings: Settings, name: str, *, per_domain: int | None = None) -> list[dict[str, Any]]:
    """One answer-graded set by name (:data:`ANSWER_SETS`); MMLU gives its ``graded`` side only.

    Args:
        per_domain: keep at most this many rows per domain (smallest SHA-256 of the id first).
    """
    if name == "mmlu":
        from corpora.evalsets import mmlu_answer_rows

        return mmlu_answer_rows(settings, split="graded", per_domain=per_domain)
    if name == "bigbench":
        rows = load_bigbench(settings)
    elif name == "bsdquiz":
        rows = load_bsd_quiz(settings)
    else:
        raise ValueError(f"unknown answer set {name!r}; choose from {', '.join(ANSWER_SETS)}")
    if per_domain is not None:
        keep: set[str] = set()
        for d in dict.fromkeys(r["domain"] for r in rows):
            ids = sorted((r["id"] for r in rows if r["domain"] == d), key=lambda i: hashlib.sha256(i.encode()).hexdigest())
            keep.update(ids[:per_domain])
        rows = [r for r in rows if r["id"] in keep]
    return rows
