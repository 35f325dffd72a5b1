import pytest

from experts.backends import (
    BackendError,
    BackendUnavailableError,
    HFBackend,
    OpenAIBackend,
    QRHBackend,
    backend_resolver,
    make_backend,
)
from experts.registry import ExpertSpec


def test_resolver_names_match_spec_backends():
    assert set(backend_resolver) == {"hf", "openai", "qrh"}
    assert isinstance(make_backend(ExpertSpec(name="a", domain="law", backend="hf", backend_kwargs={"model": "x"})),
                      HFBackend)


def test_openai_backend_requires_url_and_model():
    with pytest.raises(BackendUnavailableError, match="base_url"):
        make_backend(ExpertSpec(name="a", domain="law", backend="openai"))


def test_openai_backend_down_raises_backend_error():
    spec = ExpertSpec(name="a", domain="law", backend="openai",
                      backend_kwargs={"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 1, "retries": 0})
    b = OpenAIBackend(spec)
    ok, detail = b.health()
    assert not ok and detail
    with pytest.raises(BackendError, match="remote expert 'a'"):
        b.generate([{"role": "user", "content": "hi"}])


def test_system_prompt_prepended_once():
    spec = ExpertSpec(name="a", domain="law", system_prompt="be a lawyer")
    b = HFBackend(spec, pool=None)
    msgs = b.messages_for([{"role": "user", "content": "q"}])
    assert msgs[0] == {"role": "system", "content": "be a lawyer"}
    own = [{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}]
    assert b.messages_for(own) == own


def test_hf_backend_bad_path_is_unavailable(tmp_path):
    b = HFBackend(ExpertSpec(name="a", domain="law", backend_kwargs={"path": str(tmp_path)}))
    assert b.health()[0] is False
    with pytest.raises(BackendError, match="not a Hugging Face model folder"):
        b.generate([{"role": "user", "content": "q"}])


def test_qrh_backend_missing_checkpoint(tmp_path):
    b = QRHBackend(ExpertSpec(name="q", domain="law", backend="qrh",
                              backend_kwargs={"checkpoint": str(tmp_path / "none.safetensors")}))
    assert b.health()[0] is False
    with pytest.raises(BackendUnavailableError):
        b.generate([{"role": "user", "content": "q"}])
