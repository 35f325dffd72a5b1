"""The periodic health probe against real expert processes: a remote expert's server is stopped, the
probe marks it down within a round, /health lists it, and routing tries healthy experts first (no
timeout wait on the dead one). The app runs in-process (TestClient); the experts are real HTTP
servers in their own processes (the stand-in of processes.py)."""

from __future__ import annotations

import time

import pytest
from fakes import build_fake_router
from fastapi.testclient import TestClient
from processes import ECHO, free_port, spawn, stop, wait_http

from api.main import create_app
from core.domains import DOMAINS
from core.settings import ApiSettings, Settings
from experts.backends import make_backend

pytestmark = pytest.mark.slow


@pytest.fixture
def echo(tmp_path):
    procs = []

    def start(name: str):
        port = free_port()
        p = spawn(["-c", ECHO, str(port), name], tmp_path / f"echo-{name}.log")
        procs.append(p)
        wait_http(f"http://127.0.0.1:{port}/v1/models", p, timeout=60)
        return f"http://127.0.0.1:{port}/v1", p

    yield start
    for p in procs:
        stop(p)


def _wait(predicate, timeout: float = 15.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not reached")


def _all_checked(health: dict) -> dict | None:
    return health if all(e["checked_at"] for e in health["expert_health"]) else None


@pytest.mark.slow
def test_probe_marks_a_stopped_expert_down_and_dispatch_skips_it(tmp_path, echo):
    law_url, law_proc = echo("e1")
    rest_url, _ = echo("e2")
    router = build_fake_router(tmp_path)  # tiny profiles and the hashing encoder; real remote backends below
    for d in DOMAINS:
        router.registry.update(d, backend="openai", backend_kwargs={
            "base_url": law_url if d == "law" else rest_url, "model": d, "timeout": 30, "retries": 0})
    router.dispatcher.backend_factory = make_backend
    app = create_app(Settings(home=tmp_path, api_key="k",
                              api=ApiSettings(warm=False, health_interval_s=0.3, health_timeout_s=1.0)), router=router)
    with TestClient(app) as c:
        h = _wait(lambda: _all_checked(c.get("/health").json()))
        assert h["health_probe_interval_s"] == 0.3 and h["experts_down"] == []
        assert {e["health"] for e in h["expert_health"]} == {"ok"}
        sub = c.post("/v1/route", json={"query": "Can my landlord evict my tenant?"}).json()["subtasks"][0]
        assert sub["expert"] == "law" and sub["answer"].startswith("[e1:law]")

        stop(law_proc)  # the law expert's server is gone
        h = _wait(lambda: (r := c.get("/health").json())["experts_down"] and r)
        law = next(e for e in h["expert_health"] if e["name"] == "law")
        assert h["experts_down"] == ["law"] and law["health"] == "down" and "/v1/models" in law["detail"]

        t0 = time.monotonic()
        sub = c.post("/v1/route", json={"query": "Can my landlord evict my tenant?"}).json()["subtasks"][0]
        assert time.monotonic() - t0 < 10
        assert sub["selected"] == ["law"] and sub["fell_back"]
        assert sub["attempts"][0] == {**sub["attempts"][0], "expert": "law", "ok": False, "skipped": True}
        assert sub["attempts"][1]["ok"] and sub["expert"] != "law" and sub["answer"].startswith("[e2:")
        assert 'qsef_expert_calls_total{expert="law",ok="false"}' not in c.get("/metrics").text  # not called


def test_probe_off_by_config(make_client):
    c = make_client(health_interval_s=0)
    h = c.get("/health").json()
    assert h["health_probe_interval_s"] == 0 and {e["health"] for e in h["expert_health"]} == {"unknown"}
