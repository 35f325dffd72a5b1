"""Feedback cannot be forged (key or signed token), is rate limited per client and counts once; the
route concurrency limit refuses with Retry-After when full."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from api.errors import ApiError
from api.security import ConcurrencyLimit, FeedbackSigner, RateLimiter, feedback_secret

KEY = {"Authorization": "Bearer test-key-123"}
Q = "Can my landlord evict my tenant without a court order?"


def _route(client, q=Q):
    body = client.post("/v1/route", json={"query": q, "options": {"use_llm": False}}).json()
    return body["request_id"], {t["expert"]: t["token"] for t in body["feedback_tokens"]}


def _law_c_model(client):
    scores = client.post("/v1/route", json={"query": Q, "options": {"answer": False}}).json()["subtasks"][0]["scores"]
    return next(s for s in scores if s["expert"] == "law")["C_model"]


def test_signer_binds_request_expert_and_expiry():
    s = FeedbackSigner(b"k" * 32, ttl_s=60)
    token, expires = s.sign("r1", "law", now=1000.0)
    assert expires == 1060 and s.verify(token, "r1", "law", now=1000.0)
    assert not s.verify(token, "r2", "law", now=1000.0)
    assert not s.verify(token, "r1", "finance", now=1000.0)
    assert not s.verify(token, "r1", "law", now=1061.0)
    assert not FeedbackSigner(b"j" * 32).verify(token, "r1", "law", now=1000.0)
    forged = token.replace("v1.1060.", "v1.9999999999.")
    assert not s.verify(forged, "r1", "law", now=1000.0)
    assert not s.verify("garbage", "r1", "law")


def test_secret_file_is_private_and_stable(tmp_path):
    path = tmp_path / "router" / "feedback.secret"
    a = feedback_secret(None, path)
    assert len(a) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert feedback_secret(None, path) == a
    assert feedback_secret("key", path) != a


def test_token_bucket_refills():
    lim = RateLimiter(rate_per_s=1.0, burst=2)
    assert lim.take("h", now=0.0) == 0 and lim.take("h", now=0.0) == 0
    assert lim.take("h", now=0.0) == pytest.approx(1.0)
    assert lim.take("other", now=0.0) == 0  # per key
    assert lim.take("h", now=1.0) == 0


def test_concurrency_limit_refuses_beyond_limit_and_queue():
    async def run():
        lim = ConcurrencyLimit(1, 1)
        gate = asyncio.Event()

        async def hold():
            async with lim.slot():
                await gate.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(2)]  # one running, one queued
        await asyncio.sleep(0.01)
        with pytest.raises(ApiError) as exc:
            async with lim.slot():
                pass
        assert exc.value.status == 503 and exc.value.headers == {"Retry-After": "1"}
        gate.set()
        await asyncio.gather(*tasks)
        async with lim.slot():  # free again
            pass

    asyncio.run(run())


def test_forged_feedback_is_refused_and_moves_nothing(client):
    before = _law_c_model(client)
    for _ in range(27):  # the attack: request ids are public, ratings of 0 moved routing
        rid, _tokens = _route(client)
        r = client.post("/v1/feedback", json={"request_id": rid, "rating": 0})
        assert r.status_code in (401, 429), r.text
    rid, tokens = _route(client)
    bad = client.post("/v1/feedback", json={"request_id": rid, "rating": 0, "expert": "law",
                                            "token": tokens["law"][:-2] + "xx"})
    assert bad.status_code in (403, 429)
    other_rid, _ = _route(client)
    stolen = client.post("/v1/feedback", json={"request_id": other_rid, "rating": 0, "expert": "law",
                                               "token": tokens["law"]})
    assert stolen.status_code in (403, 429)
    assert _law_c_model(client) == pytest.approx(before)


def test_token_and_key_ratings_count_once(make_client):
    client = make_client(feedback_burst=100)
    rid, tokens = _route(client)
    assert set(tokens) == {"law"}
    e = client.post("/v1/feedback", json={"request_id": rid, "rating": 0, "token": tokens["law"]})
    assert e.status_code == 422 and "expert" in e.json()["error"]["message"]
    ok = client.post("/v1/feedback", json={"request_id": rid, "rating": 0, "expert": "law", "token": tokens["law"]})
    assert ok.status_code == 200 and ok.json()["rated"] == 1
    again = client.post("/v1/feedback", json={"request_id": rid, "rating": 0, "expert": "law",
                                              "token": tokens["law"]})
    assert again.status_code == 409 and again.json()["error"]["type"] == "already_rated"
    assert client.post("/v1/feedback", json={"request_id": rid, "rating": 1}, headers=KEY).status_code == 409
    rid2, _ = _route(client)
    assert client.post("/v1/feedback", json={"request_id": rid2, "rating": 1}, headers=KEY).status_code == 200
    wrong_key = client.post("/v1/feedback", json={"request_id": rid2, "rating": 1},
                            headers={"Authorization": "Bearer nope"})
    assert wrong_key.status_code == 401


def test_feedback_rate_limit_answers_429_with_retry_after(make_client):
    client = make_client(feedback_burst=3, feedback_rate_per_min=6)
    codes = []
    for _ in range(5):
        rid, tokens = _route(client)
        (expert, token), = tokens.items()
        r = client.post("/v1/feedback", json={"request_id": rid, "rating": 1, "expert": expert, "token": token})
        codes.append(r.status_code)
    assert codes == [200, 200, 200, 429, 429]
    assert int(r.headers["retry-after"]) >= 1 and "retry in" in r.json()["error"]["message"]
    rid, _ = _route(client)
    assert client.post("/v1/feedback", json={"request_id": rid, "rating": 0}, headers=KEY).status_code == 200


def test_chat_completion_returns_feedback_tokens(client):
    body = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}]}).json()
    (tok,) = body["feedback_tokens"]
    r = client.post("/v1/feedback", json={"request_id": body["qsef"]["request_id"], "correct": True,
                                          "expert": tok["expert"], "token": tok["token"]})
    assert r.status_code == 200, r.text
