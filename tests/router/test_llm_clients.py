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
    from router.llm import ServedWithFallback

    assert Settings(home=tmp_path).router_backend == "vllm"  # the product's design: served by vLLM by default
    s = Settings(home=tmp_path, router_backend="vllm", llm_port=8123, router_model="qwen-1.5b")
    llm = router_llm_from_settings(s)
    assert isinstance(llm, ServedWithFallback) and isinstance(llm.in_process, TransformersRouterLLM)
    served = llm.served
    assert served.base_url == "http://127.0.0.1:8123/v1" and served.model == "qwen-1.5b"
    llm = router_llm_from_settings(s.model_copy(update={"llm_url": "http://10.0.0.2:9000/v1"}))
    assert isinstance(llm, OpenAIRouterLLM) and llm.base_url == "http://10.0.0.2:9000/v1"  # an explicit server
    assert isinstance(router_llm_from_settings(Settings(home=tmp_path, router_backend="none")), NoRouterLLM)
    assert isinstance(router_llm_from_settings(Settings(home=tmp_path, router_backend="transformers")),
                      TransformersRouterLLM)


def test_unreachable_http_llm_raises_unavailable():
    llm = OpenAIRouterLLM("http://127.0.0.1:9/v1", "m", timeout=2, retries=0)
    with pytest.raises(RouterLLMUnavailableError):
        llm.complete([{"role": "user", "content": "hi"}])
    d = Decomposer(llm, clear_split=False).decompose("What is a tort? And how do I sort a list in Python?")
    assert d.path == "clause_splitter" and d.flagged and len(d.subtasks) == 2


@pytest.mark.slow
def test_in_process_transformers_decomposition_real_model():
    """SmolLM2-135M in-process: prefilled JSON, parsed or repaired or (flagged) split — never a crash."""
    llm = TransformersRouterLLM("smollm2-135m", pool=ModelPool(Settings()))
    raw = llm.complete([{"role": "user", "content": "Say hello."}], prefill='{"subtasks": [{"subtask": "',
                       max_tokens=8)
    assert raw.startswith('{"subtasks": [{"subtask": "') and len(raw) > 27
    d = Decomposer(llm, max_tokens=96, clear_split=False).decompose("What is a tort? And how do I sort a list in Python?")
    assert d.path in ("llm", "repaired", "clause_splitter") and d.raw.startswith('{"subtasks"')
    assert d.path != "clause_splitter" or d.flagged
    assert len(d.subtasks) >= 1


def test_served_router_llm_falls_back_in_process_and_comes_back():
    """A real HTTP server stands in for vLLM (``/health`` and chat completions); while its port is closed the
    in-process model answers, flagged; once it listens, calls move back to it."""
    import http.server
    import json as _json
    import socket
    import threading

    from fakes import ScriptedLLM

    from router.llm import ServedWithFallback

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = _json.dumps({"choices": [{"message": {"content": "from the server"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    served = OpenAIRouterLLM(f"http://127.0.0.1:{port}/v1", "m", timeout=5, retries=0)
    llm = ServedWithFallback(served, ScriptedLLM(["in process"]), recheck_s=0.0)
    hi = [{"role": "user", "content": "hi"}]
    assert llm.on_fallback and not llm.supports_json_schema
    assert llm.complete(hi) == "in process" and "fallback" in llm.describe()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        assert not llm.on_fallback and llm.supports_json_schema
        assert llm.complete(hi) == "from the server" and llm.describe() == served.describe()
    finally:
        httpd.shutdown()
