"""Multiple-choice scoring by log-likelihood on the real SmolLM2-135M, and its cache."""

from __future__ import annotations

import json

import pytest

from core.settings import Settings
from experts.answers import AnswerScorer, MCQuestion, PromptFormat, all_formats

QS = [
    MCQuestion("What is the capital of France?", ("Berlin", "Paris", "Madrid", "Rome"), 1, "general"),
    MCQuestion("Which organ pumps blood through the body?", ("The liver", "The heart", "The lungs"), 1, "medicine"),
]


def _flat(rows):
    return [x for r in rows for x in r]


def test_format_names_and_hashes():
    names = [f.name for f in all_formats()]
    assert names == ["letter-raw", "letter-chat", "cloze-raw", "cloze-chat"]
    assert len({f.hash for f in all_formats()}) == 4
    assert PromptFormat.parse("cloze-chat") == PromptFormat("cloze", True)
    with pytest.raises(ValueError):
        PromptFormat.parse("letter")
    with pytest.raises(ValueError):
        PromptFormat("essay", False)
    assert QS[0].key != MCQuestion(QS[0].question, ("Paris", "Berlin", "Madrid", "Rome"), 0, "general").key


@pytest.mark.slow
@pytest.mark.parametrize("fmt", all_formats(), ids=lambda f: f.name)
def test_scores_every_choice_and_caches(tmp_path, fmt):
    sc = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path)
    scores = sc.score(QS, fmt)
    assert [len(s) for s in scores] == [4, 3]
    assert all(isinstance(x, float) and x <= 0.0 for s in scores for x in s)
    lines = sc.cache_file(fmt).read_text().splitlines()
    assert {json.loads(line)["q"] for line in lines} == {q.key for q in QS}
    # a second scorer reads the cache without loading the model
    again = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path)
    assert _flat(again.score(QS, fmt)) == pytest.approx(_flat(scores), abs=1e-4)
    assert again._lm is None


@pytest.mark.slow
def test_batched_scoring_equals_one_at_a_time(tmp_path):
    fmt = PromptFormat("letter", True)
    batched = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path / "a", batch_size=4)
    single = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path / "b", batch_size=1)
    sb, ss = batched.score(QS, fmt), single.score(QS, fmt)
    assert _flat(sb) == pytest.approx(_flat(ss), abs=1e-3)  # right padding does not change the last real position
    # SmolLM2 answers "A" to nearly every letter-form question (measured: 435 of 440 MMLU questions), so
    # only the arithmetic is checked here: the prediction is the best-scoring choice
    assert batched.predict(QS, fmt).tolist() == [max(range(len(r)), key=r.__getitem__) for r in sb]


def test_missing_model_is_a_load_error(tmp_path):
    from experts.answers import ModelLoadError

    sc = AnswerScorer("no-such-model", settings=Settings(home=tmp_path), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="no-such-model"):
        sc.score(QS[:1], PromptFormat("letter", False))
