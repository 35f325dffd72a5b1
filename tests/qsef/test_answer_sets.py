"""The answer-grading split of MMLU and the other multiple-choice sources."""

from __future__ import annotations

import collections

import pytest

from core.settings import Settings
from corpora import SourceMissingError, mmlu_split_of
from corpora.mcsets import _quiz_text


def test_split_is_deterministic_and_about_a_quarter():
    ids = [f"mmlu-{i}" for i in range(4000)]
    sides = [mmlu_split_of(i) for i in ids]
    assert sides == [mmlu_split_of(i) for i in ids]
    share = sides.count("graded") / len(ids)
    assert 0.22 < share < 0.28
    assert set(sides) == {"graded", "history"}


def test_quiz_text_takes_the_first_spelling():
    assert _quiz_text("Andorra la V[ell|iej]a") == "Andorra la Vella"
    assert _quiz_text("Vienna|Wien") == "Vienna"
    assert _quiz_text("{G{eorge} }Washington") == "George Washington"


def _or_skip(fn):
    try:
        return fn()
    except SourceMissingError as exc:  # pragma: no cover - depends on `qsef corpora ensure-assets`
        pytest.skip(str(exc))


def test_mmlu_sides_are_disjoint_and_seed_history_uses_history_only():
    from corpora import load_mmlu, mmlu_answer_rows

    s = Settings()
    graded = _or_skip(lambda: load_mmlu(s, split="graded"))
    history = load_mmlu(s, split="history")
    assert not {r["id"] for r in graded} & {r["id"] for r in history}
    assert len(graded) + len(history) == len(load_mmlu(s))
    assert all(mmlu_split_of(r["id"]) == "graded" for r in graded)
    rows = mmlu_answer_rows(s, split="graded", per_domain=5)
    assert collections.Counter(r["domain"] for r in rows) == dict.fromkeys(
        ("medicine", "law", "code", "finance", "general"), 5)
    assert all(set(r) >= {"question", "choices", "answer", "domain"} for r in rows)
    with pytest.raises(ValueError, match="split"):
        load_mmlu(s, split="test")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bigbench", "bsdquiz"])
def test_other_sources_are_valid_rows(tmp_path, name):
    import json

    from corpora.mcsets import load_answer_set
    from router.answers import load_answer_rows

    rows = load_answer_set(Settings(), name)
    assert len(rows) > 100
    p = tmp_path / "rows.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert len(load_answer_rows(p)) == len(rows)  # every row passes the CLI's validation
    golds = collections.Counter(r["answer"] for r in rows)
    assert max(golds.values()) < 0.5 * len(rows)  # the gold answer is not always in one position
