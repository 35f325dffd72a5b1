"""The HTTP app on the shared PostgreSQL store: idempotent ratings over HTTP, and a database lost
mid-request answered with 503 and a reason (never a stack trace), recovering when it is back."""

from __future__ import annotations

import pytest

AUTH = {"Authorization": "Bearer test-key-123"}  # tests/api/conftest.py's API_KEY
Q = {"query": "What is a tort?", "options": {"use_llm": False}}


def test_a_retried_rating_with_an_idempotency_key_counts_once(make_client, pg_cluster):
    client = make_client(database_url=pg_cluster.create_schema("api_idem"))
    rid = client.post("/v1/route", json=Q).json()["request_id"]
    first = client.post("/v1/feedback", json={"request_id": rid, "rating": 0}, headers={**AUTH, "Idempotency-Key": "a1"})
    again = client.post("/v1/feedback", json={"request_id": rid, "rating": 0}, headers={**AUTH, "Idempotency-Key": "a1"})
    assert first.status_code == again.status_code == 200 and first.json() == again.json() == {"request_id": rid,
                                                                                              "rated": 1}
    body_key = client.post("/v1/feedback", json={"request_id": rid, "rating": 0, "idempotency_key": "a1"},
                           headers=AUTH)
    assert body_key.json() == first.json()
    reused = client.post("/v1/feedback", json={"request_id": rid, "rating": 1}, headers={**AUTH, "Idempotency-Key": "a1"})
    assert reused.status_code == 422 and reused.json()["error"]["type"] == "idempotency_key_reused"
    plain = client.post("/v1/feedback", json={"request_id": rid, "rating": 0}, headers=AUTH)  # no key: a new rating
    assert plain.status_code == 409
    health = client.get("/health").json()
    assert health["store"].startswith("postgresql") and health["worker_pid"] > 0


def test_a_database_lost_mid_run_is_a_503_with_a_reason(make_client):
    from core.pglocal import LocalPostgres

    with LocalPostgres() as pg:  # its own cluster: this test stops it
        client = make_client(database_url=pg.create_schema("lost"))
        rid = client.post("/v1/route", json=Q).json()["request_id"]
        pg.pg_ctl("stop")
        for method, path, body in (("post", "/v1/route", Q), ("post", "/v1/score", {"text": "What is a tort?"}),
                                   ("post", "/v1/feedback", {"request_id": rid, "rating": 0})):
            r = getattr(client, method)(path, json=body, headers=AUTH)
            assert r.status_code == 503, (path, r.status_code, r.text)
            err = r.json()["error"]
            assert err["type"] == "database_unavailable" and "retry" in err["message"]
            assert "Traceback" not in r.text and r.headers["Retry-After"]
        pg.pg_ctl("start")
        ok = client.post("/v1/feedback", json={"request_id": rid, "rating": 0}, headers={**AUTH, "Idempotency-Key": "k"})
        assert ok.status_code == 200 and ok.json()["rated"] == 1


@pytest.mark.parametrize("header", ["x-qsef-worker", "x-request-id"])
def test_every_response_names_its_worker(client, header):
    assert client.get("/health").headers[header]
