import json

import pytest
from fakes import FakeBackend, ScriptedLLM

KEY = {"Authorization": "Bearer test-key-123"}
Q = "What dose of ibuprofen is safe for a fever, and how do I deduct medical costs on my taxes?"


def _err(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["message"] and body["request_id"]
    return body["error"]


# -- happy paths ------------------------------------------------------------------------------------

def test_route_returns_subtasks_scores_answers(client):
    r = client.post("/v1/route", json={"query": Q})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decomposition_path"] == "clause_splitter" and body["decomposition_flagged"] is True
    assert [s["expert"] for s in body["subtasks"]] == ["medicine", "finance"]
    assert body["subtasks"][0]["scores"][0]["TE"] > 0 and 0 < body["subtasks"][0]["scores"][0]["P"] <= 1
    assert r.headers["x-request-id"] == body["request_id"]


def test_request_id_is_propagated(client):
    r = client.post("/v1/route", json={"query": "What is a tort?"}, headers={"X-Request-ID": "abc-123"})
    assert r.json()["request_id"] == "abc-123" and r.headers["x-request-id"] == "abc-123"


def test_score(client):
    r = client.post("/v1/score", json={"text": "Can my landlord evict me?"})
    assert r.status_code == 200, r.text
    experts = r.json()["experts"]
    assert experts[0]["expert"] == "law" and [e["rank"] for e in experts] == [1, 2, 3, 4, 5]
    assert set(experts[0]) >= {"D_emb", "D_kg", "C_data", "C_model", "C_sparsity", "D", "R", "TE", "P"}
    assert sum(e["P"] for e in experts) == pytest.approx(1.0) and experts[0]["P"] == max(e["P"] for e in experts)


def test_score_unbatched_equals_batched(make_client):
    a = make_client(batch_window_ms=5).post("/v1/score", json={"text": "Is ibuprofen safe?"}).json()
    b = make_client(batch_window_ms=0).post("/v1/score", json={"text": "Is ibuprofen safe?"}).json()
    assert [e["TE"] for e in a["experts"]] == pytest.approx([e["TE"] for e in b["experts"]])


def test_experts_crud_with_key(client):
    assert len(client.get("/v1/experts").json()) == 5
    spec = {"name": "tax", "domain": "finance", "backend": "openai",
            "backend_kwargs": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}, "profile": {"texts": ["vat tax"]}}
    r = client.post("/v1/experts", json=spec, headers=KEY)
    assert r.status_code == 201, r.text
    assert client.get("/v1/experts/tax").json()["backend"] == "openai"
    assert client.patch("/v1/experts/tax", json={"cost": 2.5}, headers={"X-API-Key": "test-key-123"}).json()["cost"] == 2.5
    assert client.delete("/v1/experts/tax", headers=KEY).status_code == 204
    _err(client.get("/v1/experts/tax"), 404)


def test_feedback_roundtrip(client):
    body = client.post("/v1/route", json={"query": "What is a tort?"}).json()
    (tok,) = body["feedback_tokens"]
    r = client.post("/v1/feedback", json={"request_id": body["request_id"], "correct": False,
                                          "expert": tok["expert"], "token": tok["token"]})
    assert r.status_code == 200 and r.json()["rated"] == 1


def test_health_and_metrics(client):
    client.post("/v1/route", json={"query": "What is a tort?"})
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["experts"] == 5
    m = client.get("/metrics").text
    assert "qsef_http_requests_total" in m and 'qsef_decompositions_total{flagged="false",path="fast_path"}' in m


def test_chat_completion_and_stream(client):
    r = client.post("/v1/chat/completions", json={"model": "qsef-router", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": Q}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and "[medicine]" in body["choices"][0]["message"]["content"]
    assert body["qsef"]["subtasks"][1]["expert"] == "finance"
    with client.stream("POST", "/v1/chat/completions", json={"messages": [{"role": "user", "content": "What is a tort?"}],
                                                             "stream": True}) as s:
        events = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert "[law]" in text


# -- bad input: always a 4xx with a clear message -----------------------------------------------------

def test_malformed_json(client):
    e = _err(client.post("/v1/route", content=b'{"query": "x"', headers={"content-type": "application/json"}), 400)
    assert "not valid JSON" in e["message"]


@pytest.mark.parametrize("body", [{"query": ""}, {"query": "   "}, {}, {"query": 42}, {"query": ["a"]},
                                  {"query": "ok", "options": {"strategy": "magic"}}, {"query": "ok", "extra": 1},
                                  {"query": "ok", "options": {"k": 0}}])
def test_bad_route_bodies(client, body):
    e = _err(client.post("/v1/route", json=body), 422)
    assert e["details"]


def test_one_megabyte_query_rejected(client):
    e = _err(client.post("/v1/route", json={"query": "a" * 1_000_000}), 413)
    assert "exceeds the limit" in e["message"]


def test_long_query_under_body_limit_rejected(make_client):
    c = make_client(max_query_chars=100)
    e = _err(c.post("/v1/route", json={"query": "word " * 50}), 422)
    assert "limit is 100" in e["message"]


def test_chunked_oversized_body_rejected(client):
    def gen():
        for _ in range(40):
            yield b"x" * 10_000

    _err(client.post("/v1/score", content=gen(), headers={"content-type": "application/json"}), 413)


def test_wrong_types_score_and_feedback(client):
    _err(client.post("/v1/score", json={"text": {"a": 1}}), 422)
    _err(client.post("/v1/feedback", json={"request_id": "x", "rating": "good"}), 422)
    _err(client.post("/v1/feedback", json={"request_id": "x"}), 422)
    _err(client.post("/v1/feedback", json={"request_id": "x", "rating": 1.5}), 422)
    e = _err(client.post("/v1/feedback", json={"request_id": "never-routed", "rating": 1}, headers=KEY), 404)
    assert "no routed outcome" in e["message"]


def test_unknown_expert(client):
    e = _err(client.get("/v1/experts/astrology"), 404)
    assert "unknown expert 'astrology'" in e["message"] and "law" in e["message"]
    _err(client.delete("/v1/experts/astrology", headers=KEY), 404)
    _err(client.patch("/v1/experts/astrology", json={"cost": 1}, headers=KEY), 404)


def test_missing_and_wrong_api_key(client):
    spec = {"name": "x", "domain": "law"}
    e = _err(client.post("/v1/experts", json=spec), 401)
    assert "API key" in e["message"]
    _err(client.delete("/v1/experts/law"), 401)
    _err(client.delete("/v1/experts/law", headers={"Authorization": "Bearer nope"}), 401)
    assert client.get("/v1/experts/law").status_code == 200  # not deleted


def test_mutations_disabled_without_configured_key(make_client):
    e = _err(make_client(api_key=None).delete("/v1/experts/law", headers=KEY), 403)
    assert "QSEF_API_KEY" in e["message"]


def test_bad_expert_definitions(client):
    _err(client.post("/v1/experts", json={"name": "Bad Name", "domain": "law"}, headers=KEY), 422)
    _err(client.post("/v1/experts", json={"name": "x", "domain": "law", "backend": "gpu"}, headers=KEY), 422)
    e = _err(client.post("/v1/experts", json={"name": "x", "domain": "law", "backend": "openai"}, headers=KEY), 422)
    assert "base_url" in e["message"]
    _err(client.post("/v1/experts", json={"name": "law", "domain": "law"}, headers=KEY), 409)


def test_chat_bad_inputs(client):
    _err(client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}), 404)
    _err(client.post("/v1/chat/completions", json={"messages": []}), 422)
    _err(client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]}), 422)
    _err(client.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}), 422)


def test_unknown_endpoint_and_method(client):
    assert "no endpoint" in _err(client.get("/v1/nothing"), 404)["message"]
    _err(client.get("/v1/route"), 405)


# -- faults: the server keeps serving -------------------------------------------------------------------

def test_router_llm_down_is_flagged_and_server_keeps_serving(make_client):
    c = make_client(llm=ScriptedLLM(down=True))
    for _ in range(3):
        body = c.post("/v1/route", json={"query": Q}).json()
        assert body["decomposition_path"] == "clause_splitter" and body["decomposition_flagged"]
        assert "unavailable" in body["decomposition_reason"]
    assert c.get("/health").status_code == 200


def test_expert_down_and_slow_fall_back(make_client):
    c = make_client(timeout_s=0.3)
    FakeBackend.modes.update({"law": "down", "code": "slow"})
    law = c.post("/v1/route", json={"query": "Can my landlord evict my tenant?"}).json()["subtasks"][0]
    assert law["selected"] == ["law"] and law["expert"] not in (None, "law") and law["fell_back"]
    code = c.post("/v1/route", json={"query": "How do I sort a list in Python?"}).json()["subtasks"][0]
    assert "timeout" in code["attempts"][0]["error"] and code["expert"] not in (None, "code")
    assert c.post("/v1/score", json={"text": "still serving?"}).status_code == 200
    health = c.get("/health").json()
    assert set(health["experts_down"]) == {"law", "code"} and health["status"] == "ok"


# -- hardening: every bad value is a 4xx naming the field; one bad expert does not take scoring down -------

REMOTE = {"name": "tax", "domain": "finance", "backend": "openai",
          "backend_kwargs": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
          "profile": {"texts": ["value added tax on sales", "income tax return and deductions"]}}


@pytest.mark.parametrize(("change", "field"), [
    ({"size_params": 2**63}, "size_params"),
    ({"size_params": 10**30}, "size_params"),
    ({"profile": {"dir": 5}}, "profile"),
    ({"profile": {"texts": [1, 2]}}, "profile"),
    ({"profile": {"texts": "abc"}}, "profile"),
    ({"profile": {"dir": "/etc"}}, "outside the data directory"),
    ({"domain": "a/b"}, "domain"),
    ({"backend_kwargs": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": "abc"}}, "timeout"),
])
def test_bad_expert_values_are_4xx_on_post_and_patch(client, change, field):
    e = _err(client.post("/v1/experts", json={**REMOTE, **change}, headers=KEY), 422)
    assert field in json.dumps(e)
    assert client.post("/v1/experts", json=REMOTE, headers=KEY).status_code == 201
    e = _err(client.patch("/v1/experts/tax", json=change, headers=KEY), 422)
    assert field in json.dumps(e)
    assert client.post("/v1/score", json={"text": "What is VAT?"}).status_code == 200
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("raw", [b"Infinity", b"-Infinity", b"NaN", b"1e400"])
def test_non_finite_cost_is_refused(client, raw):
    body = json.dumps({**REMOTE, "cost": 1.0}).encode().replace(b"1.0", raw)
    _err(client.post("/v1/experts", content=body, headers={**KEY, "content-type": "application/json"}), 422)
    assert client.post("/v1/experts", json=REMOTE, headers=KEY).status_code == 201
    _err(client.patch("/v1/experts/tax", content=b'{"cost": ' + raw + b"}",
                      headers={**KEY, "content-type": "application/json"}), 422)
    assert client.get("/v1/experts/tax").json()["cost"] == 1.0


def test_hf_and_qrh_paths_are_confined(client):
    for kw in ({"backend": "hf", "backend_kwargs": {"path": "/etc"}},
               {"backend": "qrh", "backend_kwargs": {"checkpoint": "/etc"}},
               {"backend": "qrh", "backend_kwargs": {"checkpoint": "ckpt", "tokenizer": "/etc"}}):
        e = _err(client.post("/v1/experts", json={"name": "x", "domain": "law", **kw}, headers=KEY), 422)
        assert "outside the data directory" in e["message"]


def test_chat_content_part_with_non_string_text_is_422(client):
    for text in (5, ["a"], {"a": 1}):
        _err(client.post("/v1/chat/completions", json={"messages": [
            {"role": "user", "content": [{"type": "text", "text": text}]}]}), 422)
    ok = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "What is a tort?"}]}]})
    assert ok.status_code == 200, ok.text


def test_unknown_route_option_is_422(client):
    e = _err(client.post("/v1/route", json={"query": "ok", "options": {"stratgy": "top_k"}}), 422)
    assert "stratgy" in e["message"]


def test_405_has_allow_and_every_error_one_request_id(client):
    r = client.get("/v1/route")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    for resp in (r, client.get("/v1/nothing"), client.post("/v1/route", json={})):
        assert len(resp.headers.get_list("x-request-id")) == 1


def test_a_damaged_registry_row_does_not_break_the_api(client, tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "experts.sqlite", isolation_level=None)
    db.execute("UPDATE experts SET backend_kwargs = '{broken' WHERE name = 'law'")
    db.close()
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "degraded"
    assert any("'law'" in r and "not valid JSON" in r for r in h.json()["reasons"])
    assert "law" not in [e["name"] for e in client.get("/v1/experts").json()]
    assert client.post("/v1/score", json={"text": "Can my landlord evict me?"}).status_code == 200
    assert client.post("/v1/route", json={"query": "Can my landlord evict me?"}).status_code == 200
    assert _err(client.get("/v1/experts/law"), 409)["type"] == "expert_damaged"
    assert client.delete("/v1/experts/law", headers=KEY).status_code == 204
    assert client.get("/health").json()["status"] == "ok"


def test_an_expert_left_out_of_scoring_degrades_health(client, tmp_path):
    import numpy as np
    from fakes import HashEncoder

    from core.settings import Settings
    from qsef.profiles import build_domain_profile

    prof = build_domain_profile("law", settings=Settings(home=tmp_path), encoder=HashEncoder(),
                                passages=["tenant landlord lease"])
    prof.with_centroid(np.ones(7, dtype=np.float32), prototypes=None).save(tmp_path / "bad-profile")
    assert client.post("/v1/experts", json={"name": "tenancy", "domain": "law",
                                            "profile": {"dir": str(tmp_path / "bad-profile")}},
                       headers=KEY).status_code == 201
    r = client.post("/v1/score", json={"text": "Can my landlord evict me?"})
    assert r.status_code == 200 and "expert_unavailable:tenancy" in r.json()["flags"]
    h = client.get("/health").json()
    assert h["status"] == "degraded" and any("tenancy" in x and "dimensions" in x for x in h["reasons"])


# -- abandoned requests free the model ------------------------------------------------------------------------

def test_route_budget_cancels_generation(make_client):
    import time

    c = make_client(route_budget_s=0.5, timeout_s=30)
    c.post("/v1/score", json={"text": "warm up the profiles"})  # scoring itself is not interruptible
    FakeBackend.modes.update({"law": "slow"})
    t0 = time.perf_counter()
    e = _err(c.post("/v1/route", json={"query": "Can my landlord evict my tenant?"}), 504)
    assert e["type"] == "request_budget_exceeded" and time.perf_counter() - t0 < 5


def test_full_route_queue_is_503_with_retry_after(make_client):
    import threading

    c = make_client(max_routes=1, max_queued_routes=0, timeout_s=30)
    c.post("/v1/score", json={"text": "warm up the profiles"})
    FakeBackend.modes.update({"law": "slow"})
    first = threading.Thread(target=c.post, args=("/v1/route",), kwargs={"json": {"query": "Can my landlord evict?"}})
    first.start()
    import time

    time.sleep(1.0)
    r = c.post("/v1/route", json={"query": "What is a bond?"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    FakeBackend.modes.clear()
    first.join(timeout=10)


def test_client_disconnect_cancels_the_route_on_a_real_server(tmp_path):
    """A real uvicorn server and one shared model (a lock, as ModelPool holds per model): a client that
    gives up frees the model within a step, so the next request to it is not kept waiting."""
    import threading
    import time

    import httpx
    import uvicorn
    from fakes import build_fake_router

    from api.main import create_app
    from core.settings import ApiSettings, Settings
    from tests.api.processes import free_port

    class OneModel(FakeBackend):
        lock = threading.Lock()

        def __init__(self, spec, **kwargs):
            super().__init__(spec)
            self.delay = 60  # an abandoned generation would hold the model for a minute

        def generate(self, messages, **kw):
            with self.lock:
                return super().generate(messages, **kw)

    FakeBackend.modes = {"law": "slow"}
    router = build_fake_router(tmp_path, timeout_s=120)
    router.dispatcher.backend_factory = OneModel
    app = create_app(Settings(home=tmp_path, api=ApiSettings(warm=False, health_interval_s=0, max_routes=2,
                                                            max_queued_routes=0)), router=router)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        httpx.post(f"{url}/v1/score", json={"text": "warm up the profiles"}, timeout=120)
        q = {"query": "Can my landlord evict my tenant?", "options": {"use_llm": False}}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{url}/v1/route", json=q, timeout=1.0)
        FakeBackend.modes = {}
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/v1/route", json=q, timeout=90)
        assert r.status_code == 200 and r.json()["subtasks"][0]["expert"] == "law", r.text
        assert time.perf_counter() - t0 < 3.0
        assert len([o for o in router.feedback.outcomes() if o["expert"] == "law"]) == 1  # abandoned: not recorded
    finally:
        FakeBackend.modes = {}
        server.should_exit = True
        thread.join(timeout=10)


def test_openapi_documents_error_bodies_and_metrics_type(client):
    doc = client.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert {"400", "422", "429"} <= set(op["responses"]), (method, path)
            assert "ErrorPublic" in json.dumps(op["responses"]["422"])
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
