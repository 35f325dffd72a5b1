import json

import pytest

from router.testing import FakeBackend, ScriptedLLM

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
    assert body["subtasks"][0]["scores"][0]["TE"] > 0
    assert r.headers["x-request-id"] == body["request_id"]


def test_request_id_is_propagated(client):
    r = client.post("/v1/route", json={"query": "What is a tort?"}, headers={"X-Request-ID": "abc-123"})
    assert r.json()["request_id"] == "abc-123" and r.headers["x-request-id"] == "abc-123"


def test_score(client):
    r = client.post("/v1/score", json={"text": "Can my landlord evict me?"})
    assert r.status_code == 200, r.text
    experts = r.json()["experts"]
    assert experts[0]["expert"] == "law" and [e["rank"] for e in experts] == [1, 2, 3, 4, 5]
    assert set(experts[0]) >= {"D_emb", "D_kg", "C_data", "C_model", "C_sparsity", "R", "TE", "P"}
    assert abs(sum(e["P"] for e in experts) - 1.0) < 1e-5 and experts[0]["P"] == max(e["P"] for e in experts)


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
    rid = client.post("/v1/route", json={"query": "What is a tort?"}).json()["request_id"]
    r = client.post("/v1/feedback", json={"request_id": rid, "correct": False})
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
    e = _err(client.post("/v1/feedback", json={"request_id": "never-routed", "rating": 1}), 404)
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
