"""Several router workers: ``qsef serve --workers 2`` on PostgreSQL as a real subprocess, over real HTTP.

Both workers serve (the ``X-QSEF-Worker`` header names the process), ``/metrics`` on either worker sums
both (prometheus-client's multiprocess mode), one worker probes expert health for the host, and a registry
change made through one worker is visible through the other. Also, in process: the prober election.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from processes import free_port, wait_http

from api.probe import HealthProbe

ROOT = Path(__file__).resolve().parents[2]
KEY = {"Authorization": "Bearer k"}


def test_one_prober_per_host_and_a_successor_when_it_stops(tmp_path):
    class Registry:
        def list(self, **_):
            return []

    lock = tmp_path / "health-probe.lock"
    ticks = []
    a = HealthProbe(Registry(), None, interval_s=60, lock_path=lock, on_tick=lambda: ticks.append("a"))
    b = HealthProbe(Registry(), None, interval_s=60, lock_path=lock, on_tick=lambda: ticks.append("b"))

    async def scenario():
        await a.start()
        await asyncio.sleep(0.3)
        await b.start()
        await asyncio.sleep(0.3)
        first = (a.is_prober, b.is_prober, a.rounds, b.rounds)
        await a.stop()  # the prober goes away: its lock with it
        assert b._elect()
        await b.stop()
        return first

    assert asyncio.run(scenario()) == (True, False, 1, 0)
    assert sorted(ticks) == ["a", "b"]  # every worker syncs its registry view, prober or not


@pytest.fixture
def two_workers(tmp_path, pg_cluster):
    port = free_port()
    env = {**os.environ, "QSEF_DATABASE_URL": pg_cluster.create_database("workers"), "QSEF_API_KEY": "k",
           "QSEF_ROUTER_BACKEND": "none", "QSEF_LOG_LEVEL": "WARNING", "QSEF_API_HEALTH_INTERVAL_S": "2",
           "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--workers", "2", "--port", str(port),
                             "--run-dir", str(tmp_path / "run")], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    proc.log = log
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, timeout=600)
        yield url, tmp_path / "run"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _by_worker(url: str, n: int, path: str = "/v1/score", body=None) -> collections.Counter:
    """``n`` requests from 8 concurrent clients; {(status, worker pid): count}."""
    def one(i):
        with httpx.Client(timeout=120) as c:
            r = c.post(url + path, json=body or {"text": f"What is a tort, case {i}?"})
            return r.status_code, r.headers.get("x-qsef-worker")

    with cf.ThreadPoolExecutor(8) as ex:
        return collections.Counter(ex.map(one, range(n)))


def _until_other_worker(url: str, not_pid: str, method: str, path: str, **kw) -> httpx.Response:
    """Send the request on fresh connections until a worker other than ``not_pid`` answers it."""
    for _ in range(200):
        r = httpx.request(method, url + path, timeout=60, **kw)
        if r.headers["x-qsef-worker"] != not_pid:
            return r
    raise AssertionError(f"every answer came from worker {not_pid}")


@pytest.mark.slow
def test_two_workers_share_the_store_the_metrics_and_one_prober(two_workers):
    url, run_dir = two_workers
    deadline = time.time() + 300
    while True:  # the second worker may still be loading its encoder
        seen = _by_worker(url, 40)
        if len({pid for _, pid in seen}) == 2 or time.time() > deadline:
            break
    assert {status for status, _ in seen} == {200}, seen
    pids = {pid for _, pid in seen}
    assert len(pids) == 2, f"only one worker answered: {seen}"

    # /metrics on either worker counts every worker's requests
    text = httpx.get(url + "/metrics").text
    scored = sum(float(v) for v in re.findall(r'qsef_http_requests_total\{method="POST",route="/v1/score",'
                                              r'status="200"\} ([0-9.e+]+)', text))
    assert scored >= sum(seen.values()) and scored == sum(
        float(v) for v in re.findall(r'route="/v1/score",status="200"\} ([0-9.e+]+)', httpx.get(url + "/metrics").text))
    assert len(list((run_dir / "metrics").glob("counter_*.db"))) >= 2

    # a registry change through one worker is visible through the other
    added = httpx.post(url + "/v1/experts", headers=KEY, timeout=60,
                       json={"name": "tax", "domain": "finance", "backend": "openai",
                             "backend_kwargs": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}})
    assert added.status_code == 201, added.text
    other = _until_other_worker(url, added.headers["x-qsef-worker"], "GET", "/v1/experts/tax")
    assert other.status_code == 200 and other.json()["domain"] == "finance"

    # one prober on the host, whichever worker it is
    health = {}
    for _ in range(200):
        h = httpx.get(url + "/health", timeout=60)
        health[h.headers["x-qsef-worker"]] = h.json()["health_prober"]
        if len(health) == 2:
            break
    assert sorted(health.values()) == [False, True], health
    assert (run_dir / "health-probe.lock").read_text().strip() in pids
