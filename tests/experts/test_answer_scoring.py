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


# -- LoRA adapters and the last-position letter path --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A random LoRA adapter for SmolLM2-135M (B nonzero, so it changes the outputs), saved with peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.store import ModelStore

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(ModelStore(Settings()).ensure("smollm2-135m"), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    folder = tmp_path_factory.mktemp("adapter") / "tiny"
    model.save_pretrained(folder)
    assert (folder / "adapter_model.safetensors").is_file()
    return folder


@pytest.mark.slow
def test_adapter_changes_scores_and_is_cached_apart(tmp_path, tiny_adapter):
    fmt = PromptFormat("letter", False)
    base = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path)
    lora = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path, adapter=tiny_adapter)
    assert lora.model_id.startswith(base.model_id + "+tiny@") and lora.model_id != base.model_id
    assert lora.cache_file(fmt) != base.cache_file(fmt)
    sb, sl = _flat(base.score(QS, fmt)), _flat(lora.score(QS, fmt))
    assert max(abs(a - b) for a, b in zip(sb, sl, strict=True)) > 1e-3
    # each reads back its own scores, without loading a model
    again = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path, adapter=tiny_adapter)
    assert _flat(again.score(QS, fmt)) == pytest.approx(sl, abs=1e-4) and again._lm is None
    assert _flat(AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path).score(QS, fmt)) == \
        pytest.approx(sb, abs=1e-4)
    # another adapter (other weights) gets another cache
    other = tmp_path / "tiny"
    other.mkdir()
    (other / "adapter_config.json").write_bytes((tiny_adapter / "adapter_config.json").read_bytes())
    (other / "adapter_model.safetensors").write_bytes((tiny_adapter / "adapter_model.safetensors").read_bytes() + b" ")
    assert AnswerScorer("smollm2-135m", settings=Settings(), adapter=other).model_id != lora.model_id


def test_missing_adapter_is_a_load_error_naming_it(tmp_path):
    from experts.answers import ModelLoadError

    missing = tmp_path / "no-such-adapter"
    sc = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path, adapter=missing)
    with pytest.raises(ModelLoadError, match="no-such-adapter"):
        sc.score(QS[:1], PromptFormat("letter", False))


@pytest.mark.slow
def test_corrupt_adapter_is_a_load_error_naming_it(tmp_path, tiny_adapter):
    from experts.answers import ModelLoadError

    bad = tmp_path / "broken-adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_bytes((tiny_adapter / "adapter_config.json").read_bytes())
    (bad / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    sc = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path, adapter=bad)
    with pytest.raises(ModelLoadError, match="broken-adapter"):
        sc.score(QS[:1], PromptFormat("letter", False))
    assert sc._lm is None and not sc.cached(PromptFormat("letter", False))


@pytest.mark.slow
@pytest.mark.parametrize("chat", [False, True], ids=["raw", "chat"])
def test_last_position_letter_path_equals_full_log_softmax(tmp_path, chat):
    qs = [*QS, MCQuestion("Which of these is a prime number? Think of the numbers that have exactly two divisors, "
                          "one and themselves.", ("4", "6", "7", "9", "10"), 2, "general")]
    sc = AnswerScorer("smollm2-135m", settings=Settings(), cache_dir=tmp_path, batch_size=3)  # one padded batch
    sc.load()
    fast, full = sc._score_letter(qs, chat, fast=True), sc._score_letter(qs, chat, fast=False)
    assert _flat(fast) == pytest.approx(_flat(full), abs=1e-4)


def test_expert_scorer_resolves_peft_experts(tmp_path):
    from experts.answers import expert_family, expert_scorer
    from experts.backends import SHIPPED_ADAPTERS
    from experts.registry import ExpertRegistry, ExpertSpec

    sc = expert_scorer("code-lora", settings=Settings(), cache_dir=tmp_path)  # shipped, registered disabled
    assert sc.model == "qwen-0.5b" and sc.adapter == SHIPPED_ADAPTERS / "code"
    assert "+code-lora@" in sc.model_id and expert_family("code-lora") == "qwen"
    plain = expert_scorer("smollm2-135m", settings=Settings())
    assert plain.adapter is None and plain.model_id.startswith("smollm2-135m")
    reg = ExpertRegistry(tmp_path / "r.sqlite")
    reg.add(ExpertSpec(name="my-adapter", domain="law", backend="peft", enabled=False,
                       backend_kwargs={"adapter": str(tmp_path / "ad"), "base": "smollm2-135m"}))
    mine = expert_scorer("my-adapter", settings=Settings(), registry=reg)
    assert (mine.model, mine.adapter, mine.adapter_name) == ("smollm2-135m", tmp_path / "ad", "my-adapter")
    assert expert_family("my-adapter", reg) == "smollm2"
