import pytest

from core.settings import Settings
from experts.backends import ModelPool
from router.decompose import Decomposer
from router.llm import (
    NoRouterLLM,
    OpenAIRouterLLM,
    RouterLLMUnavailableError,
    TransformersRouterLLM,
    make_router_llm,
    router_llm_from_settings,
    router_llm_resolver,
)


def test_resolver_names_and_errors():
    assert router_llm_resolver.choices == ["none", "openai", "transformers", "vllm"]  # vllm: a synonym
    assert isinstance(make_router_llm("none"), NoRouterLLM)
    llm = make_router_llm("vllm", base_url="http://127.0.0.1:9/v1", model="m")
    assert isinstance(llm, OpenAIRouterLLM) and make_router_llm(llm) is llm
    with pytest.raises(ValueError, match="choose one of"):
        make_router_llm("gpt")


def test_from_settings(tmp_path):
    s = Settings(home=tmp_path, router_backend="vllm", llm_port=8123, router_model="qwen-1.5b")
    llm = router_llm_from_settings(s)
    assert isinstance(llm, OpenAIRouterLLM) and llm.base_url == "http://127.0.0.1:8123/v1" and llm.model == "qwen-1.5b"
    assert isinstance(router_llm_from_settings(Settings(home=tmp_path, router_backend="none")), NoRouterLLM)
    assert isinstance(router_llm_from_settings(Settings(home=tmp_path, router_backend="transformers")),
                      TransformersRouterLLM)


def test_unreachable_http_llm_raises_unavailable():
    llm = OpenAIRouterLLM("http://127.0.0.1:9/v1", "m", timeout=2, retries=0)
    with pytest.raises(RouterLLMUnavailableError):
        llm.complete([{"role": "user", "content": "hi"}])
    d = Decomposer(llm).decompose("What is a tort? And how do I sort a list in Python?")
    assert d.path == "clause_splitter" and d.flagged and len(d.subtasks) == 2


@pytest.mark.slow
def test_in_process_transformers_decomposition_real_model():
    """SmolLM2-135M in-process: prefilled JSON, parsed or repaired or (flagged) split — never a crash."""
    llm = TransformersRouterLLM("smollm2-135m", pool=ModelPool(Settings()))
    raw = llm.complete([{"role": "user", "content": "Say hello."}], prefill='{"subtasks": [{"subtask": "',
                       max_tokens=8)
    assert raw.startswith('{"subtasks": [{"subtask": "') and len(raw) > 27
    d = Decomposer(llm, max_tokens=96).decompose("What is a tort? And how do I sort a list in Python?")
    assert d.path in ("llm", "repaired", "clause_splitter") and d.raw.startswith('{"subtasks"')
    assert d.path != "clause_splitter" or d.flagged
    assert len(d.subtasks) >= 1
