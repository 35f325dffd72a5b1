"""Live tests: our app on a real uvicorn port on 127.0.0.1, real HTTP clients, real processes.

- the official ``openai`` client against our ``/v1/chat/completions`` with a real vLLM router LLM and
  real vLLM-backed experts (SmolLM2-135M, the session's shared server);
- faults with real processes stopped: a remote expert's server is terminated mid-run, the router LLM's
  endpoint is gone, a remote expert is slow — the app falls back, flags it, and keeps serving.
"""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest
from processes import ECHO, free_port, spawn, stop, wait_http

from core.domains import DOMAINS
from experts.registry import DOMAIN_PROMPTS

pytestmark = pytest.mark.slow

LAUNCHER = r"""
import json, sys
import uvicorn
from api.main import create_app
from experts.registry import ExpertSpec
from core.settings import Settings
from router.pipeline import Router

cfg = json.loads(sys.argv[1])
settings = Settings().model_copy(update=cfg["settings"])
settings = settings.model_copy(update={"router": settings.router.model_copy(update=cfg.get("router", {}))})
router = Router.from_settings(settings, registry_path=cfg["registry"], feedback_path=cfg["feedback"],
                              seed_defaults=False, timeout_s=cfg.get("timeout", 60))
for e in cfg["experts"]:
    router.registry.add(ExpertSpec(**e), replace=True)
router.refresh_domains()
app = create_app(settings, router=router)
uvicorn.run(app, host="127.0.0.1", port=cfg["port"], log_level="warning")
"""



@pytest.fixture
def launch(tmp_path):
    procs: list[subprocess.Popen] = []

    def app(settings: dict, experts: list[dict], *, timeout: float = 60, router: dict | None = None) -> str:
        port = free_port()
        # router: RouterSettings fields; clear_split off makes a compound query reach the router LLM
        cfg = {"settings": {"api_key": "k", **settings}, "router": router or {}, "experts": experts, "port": port,
               "timeout": timeout,
               "registry": str(tmp_path / "experts.sqlite"), "feedback": str(tmp_path / "feedback.sqlite")}
        p = spawn(["-c", LAUNCHER, json.dumps(cfg)], tmp_path / f"app-{port}.log")
        procs.append(p)
        wait_http(f"http://127.0.0.1:{port}/health", p)
        return f"http://127.0.0.1:{port}"

    def echo(name: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        p = spawn(["-c", ECHO, str(port), name], tmp_path / f"echo-{name}.log")
        procs.append(p)
        wait_http(f"http://127.0.0.1:{port}/v1/models", p, timeout=60)
        return f"http://127.0.0.1:{port}/v1", p

    yield app, echo
    for p in procs:
        stop(p)


def remote_expert(domain: str, base_url: str, model: str) -> dict:
    return {"name": domain, "domain": domain, "backend": "openai", "system_prompt": DOMAIN_PROMPTS[domain],
            "backend_kwargs": {"base_url": base_url, "model": model, "timeout": 30, "retries": 0}}


Q = "Can my landlord keep my deposit without a reason, and how are capital gains on index funds taxed?"


def test_faults_with_real_processes_stopped(launch):
    app, echo = launch
    e1_url, e1 = echo("e1")
    e2_url, _ = echo("e2")
    experts = [remote_expert("law", e1_url, "law")] + [
        remote_expert(d, e2_url, "slow" if d == "finance" else d) for d in DOMAINS if d != "law"]
    # router LLM: the e1 process too (its replies are not decompositions -> flagged clause splitter)
    base = app({"router_backend": "vllm", "llm_url": e1_url, "router_model": "x"}, experts, timeout=1.5,
               router={"clear_split": False})
    with httpx.Client(base_url=base, timeout=120) as c:
        body = c.post("/v1/route", json={"query": Q}).json()
        assert body["decomposition_path"] == "clause_splitter" and body["decomposition_flagged"]
        law, fin = body["subtasks"]
        assert law["expert"] == "law" and law["answer"].startswith("[e1:law]")
        # finance is slow: it times out and the next-best expert answers
        assert fin["attempts"][0]["expert"] == "finance" and "timeout" in fin["attempts"][0]["error"]
        assert fin["expert"] not in (None, "finance") and fin["fell_back"]

        stop(e1)  # the law expert's server and the router LLM's server are gone
        body = c.post("/v1/route", json={"query": Q}).json()
        assert body["decomposition_path"] == "clause_splitter" and body["decomposition_flagged"]
        assert "unreachable" in body["decomposition_reason"] or "reach" in body["decomposition_reason"]
        law = body["subtasks"][0]
        assert law["selected"] == ["law"] and not law["attempts"][0]["ok"]
        assert law["expert"] not in (None, "law") and law["answer"].startswith("[e2:")
        # the server keeps serving
        assert c.get("/health").status_code == 200
        assert c.post("/v1/score", json={"text": "What is a tort?"}).status_code == 200
        tok = body["feedback_tokens"][0]  # rating needs the token /v1/route handed out (or the API key)
        assert c.post("/v1/feedback", json={"request_id": body["request_id"], "correct": True,
                                            "expert": tok["expert"], "token": tok["token"]}).status_code == 200
        metrics = c.get("/metrics").text
        assert "qsef_expert_fallbacks_total" in metrics


@pytest.mark.vllm
def test_decomposition_with_json_schema_on_vllm(vllm_server):
    from router.decompose import Decomposer, decomposition_schema
    from router.llm import OpenAIRouterLLM

    llm = OpenAIRouterLLM(vllm_server.base_url, vllm_server.model, timeout=300, retries=0)
    raw = llm.complete([{"role": "user", "content": f"Split into sub-questions as JSON: {Q}"}],
                       json_schema=decomposition_schema(list(DOMAINS)), max_tokens=160)
    data = json.loads(raw)  # schema-constrained decoding: always valid JSON of the schema's shape
    assert isinstance(data["subtasks"], list) and data["subtasks"]
    assert all(set(i) == {"subtask", "domain"} and i["domain"] in DOMAINS for i in data["subtasks"])

    d = Decomposer(llm, list(DOMAINS), fast_path=False).decompose(Q)
    assert d.path in ("llm", "repaired", "clause_splitter") and d.raw
    assert d.path != "clause_splitter" or d.flagged
    assert d.subtasks and all(s.domain_hint in DOMAINS for s in d.subtasks)


@pytest.mark.vllm
def test_openai_client_against_our_chat_completions(launch, vllm_server):
    import openai

    app, _ = launch
    experts = [remote_expert(d, vllm_server.base_url, vllm_server.model) for d in DOMAINS]
    base = app({"router_backend": "vllm", "llm_url": vllm_server.base_url, "router_model": vllm_server.model},
               experts, timeout=300, router={"clear_split": False})
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=600, max_retries=0)
    resp = client.chat.completions.create(model="qsef-router", max_tokens=24,
                                          messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert resp.object == "chat.completion" and resp.model == "qsef-router"
    assert resp.choices[0].message.role == "assistant" and resp.choices[0].message.content.strip()
    routed = resp.model_extra["qsef"]
    assert routed["decomposition_path"] == "fast_path" and routed["subtasks"][0]["expert"] in DOMAINS

    resp = client.chat.completions.create(model="qsef-router", max_tokens=24, messages=[{"role": "user", "content": Q}])
    assert resp.model_extra["qsef"]["decomposition_path"] in ("llm", "repaired", "clause_splitter")
    assert resp.choices[0].message.content.strip()

    chunks = list(client.chat.completions.create(model="qsef-router", max_tokens=16, stream=True,
                                                 messages=[{"role": "user", "content": "What is a tort?"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    assert chunks[-1].choices[0].finish_reason == "stop"

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="qsef-router", messages=[])


def hf_expert(domain: str) -> dict:
    """An in-process expert on SmolLM2-135M (the default engine, CTranslate2: streams token by token)."""
    return {"name": domain, "domain": domain, "backend": "hf", "system_prompt": DOMAIN_PROMPTS[domain],
            "backend_kwargs": {"model": "smollm2-135m"}}


def test_openai_client_reads_a_real_token_stream(launch):
    """The official client's iterator over our stream: pieces arrive while the in-process experts generate,
    sub-task by sub-task, and the last chunk carries the routing summary."""
    import time

    import openai

    app, _ = launch
    base = app({"router_backend": "none", "torch_threads": 1}, [hf_expert(d) for d in DOMAINS], timeout=300)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=600, max_retries=0)
    # warm-up, untimed: the first call loads the model (and on a fresh data home converts it to CTranslate2)
    client.chat.completions.create(model="qsef-router", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    query = "What is a tort? How do I reverse a list in Python?"
    t0 = time.perf_counter()
    arrivals, chunks = [], []
    for chunk in client.chat.completions.create(model="qsef-router", max_tokens=32, stream=True,
                                                messages=[{"role": "user", "content": query}]):
        chunks.append(chunk)
        if chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - t0)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and last.object == "chat.completion.chunk"
    routed = last.model_extra["qsef"]
    assert len(routed["subtasks"]) == 2 and text.strip() == routed["answer"].strip()
    assert text.startswith("1. What is a tort?") and "\n\n2. How do I reverse a list in Python?" in text
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert len(arrivals) > 10  # token by token, not one finished answer
    assert arrivals[0] < 0.8 * arrivals[-1]  # the first piece came long before the end

    # a client that disconnects stops the generation: the model is free for the next request at once
    long = {"model": "qsef-router", "max_tokens": 1500, "stream": True,
            "messages": [{"role": "user", "content": "Write a long essay on the history of the Roman law."}]}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=long, timeout=600) as r:
        got = 0
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                got += 1
            if got >= 3:
                break
    t1 = time.perf_counter()
    body = httpx.post(f"{base}/v1/chat/completions", timeout=600,
                      json={"model": "qsef-router", "max_tokens": 8,
                            "messages": [{"role": "user", "content": "What is a contract?"}]}).json()
    waited = time.perf_counter() - t1
    # had the 1500-token essay kept the model busy, this 8-token answer would wait minutes for its lock
    assert body["choices"][0]["message"]["content"].strip() and waited < 60, waited
    experts = httpx.get(f"{base}/v1/experts", timeout=30).json()
    assert all(e["health"] != "down" for e in experts), experts  # a client leaving is no failure
