"""Reliability suite against the real server: bad inputs, forged feedback, kill -9 mid-write, abandoned requests.

Starts ``python -m api.cli serve`` on a free loopback port with a temporary ``QSEF_HOME`` (the models,
corpora, graphs and caches of the real data directory are linked in read-only; profiles are copied)
and runs, in order:

1. **bad-input catalogue** — hand-made bad requests over every operation; counts 5xx (must be 0) and
   checks that each 4xx body's message names the field or rule the case breaks;
2. **forged feedback** — ratings of 0 without key or token (the issue's attack), then with tokens
   from a client's own routes: how far each moves ``C_model`` of the routed expert, and how many the
   rate limit let through;
3. **abandoned request** — the latency of a 4-token route on an idle server, then right after a client
   gave up (after 5 s) on a 2,048-token route;
4. **schemathesis** (optional, ``--schemathesis PATH_TO_st``) — ``st run --checks all`` against
   ``/openapi.json`` with bounded examples;
5. **kill -9 mid-write** — a burst of acknowledged feedback ratings, then of expert registrations, with
   the server killed mid-burst; every acknowledged row is looked for in the database afterwards and
   ``PRAGMA integrity_check`` is run; the server must start again on the same files;
6. **damaged profiles** — garbage ``law/centroid.safetensors`` and ``finance/profile.json = []`` in fresh
   copies of the home: ``qsef score`` and the server start must rebuild them, not crash.

Results are printed and written to ``benchmarks/results/reliability.json`` with the command, the
machine and the date.

Example:
    $ python benchmarks/reliability.py --schemathesis /work/venv-schemathesis/bin/st
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "reliability-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LINKED = ("models", "corpora", "kg", "nltk_data")  # read-only inputs, linked
COPIED = ("profiles", "cache")  # written to by the server (rebuilds, caches), copied
FAST = {"use_llm": False, "max_tokens": 1}  # routes that call one expert for one token


# -- the server process ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_home(source: Path) -> Path:
    home = Path(tempfile.mkdtemp(prefix="qsef-reliability-"))
    for name in LINKED:
        if (source / name).exists():
            (home / name).symlink_to(source / name)
    for name in COPIED:
        if (source / name).exists():
            shutil.copytree(source / name, home / name)
    return home


class Server:
    def __init__(self, home: Path, log: Path, *, budget_s: float = 120.0):
        self.home, self.log, self.port, self.budget_s = home, log, free_port(), budget_s
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 900) -> float:
        env = {**os.environ, "QSEF_HOME": str(self.home), "QSEF_API_KEY": KEY, "QSEF_LOG_LEVEL": "WARNING",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "QSEF_API_HEALTH_INTERVAL_S": "0",
               "PYTHONPATH": str(ROOT), "QSEF_API_ROUTE_BUDGET_S": str(self.budget_s)}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("a"),
                                     start_new_session=True)
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server did not answer /health within {timeout} s")

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()


# -- 1. bad-input catalogue --------------------------------------------------------------------------------

J = {"content-type": "application/json"}
REMOTE = {"name": "cat-remote", "domain": "finance", "backend": "openai",
          "backend_kwargs": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}


def catalogue() -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(method, path, expected word in the error message, httpx kwargs)``: each breaks one rule."""
    c: list[tuple[str, str, str, dict[str, Any]]] = []
    raw = lambda body: {"content": body, "headers": J}  # noqa: E731
    # /v1/route
    for body, word in [({}, "query"), ({"query": ""}, "query"), ({"query": "   "}, "query"), ({"query": 42}, "query"),
                       ({"query": ["a"]}, "query"), ({"query": None}, "query"), ({"query": "x" * 9000}, "query"),
                       ({"query": "ok", "extra": 1}, "extra"), ({"query": "ok", "options": 5}, "options"),
                       ({"query": "ok", "options": {"strategy": "magic"}}, "strategy"),
                       ({"query": "ok", "options": {"k": 0}}, "k"), ({"query": "ok", "options": {"k": 99}}, "k"),
                       ({"query": "ok", "options": {"k": "two"}}, "k"),
                       ({"query": "ok", "options": {"cost_lambda": -1}}, "cost_lambda"),
                       ({"query": "ok", "options": {"tau": 2}}, "tau"),
                       ({"query": "ok", "options": {"max_tokens": 0}}, "max_tokens"),
                       ({"query": "ok", "options": {"max_tokens": 5000}}, "max_tokens"),
                       ({"query": "ok", "options": {"timeout_s": 0}}, "timeout_s"),
                       ({"query": "ok", "options": {"timeout_s": 1e9}}, "timeout_s"),
                       ({"query": "ok", "options": {"aggregate": "vote"}}, "aggregate"),
                       ({"query": "ok", "options": {"stratgy": "top_k"}}, "stratgy"),
                       ({"query": "ok", "options": {"answer": "maybe"}}, "answer")]:
        c.append(("POST", "/v1/route", word, {"json": body}))
    for body, word in [(b'{"query": "x"', "JSON"), (b"", "body"), (b"[]", "body"), (b'"text"', "body"),
                       (b'{"query": "ok", "options": {"tau": NaN}}', "tau"),
                       (b'{"query": "ok", "options": {"cost_lambda": Infinity}}', "cost_lambda"),
                       (b'{"query": "ok", "options": {"timeout_s": 1e400}}', "timeout_s"),
                       (b"\xff\xfe garbage", "JSON")]:
        c.append(("POST", "/v1/route", word, raw(body)))
    c.append(("POST", "/v1/route", "limit", {"json": {"query": "a" * 1_000_000}}))
    # /v1/score
    for body, word in [({}, "text"), ({"text": ""}, "text"), ({"text": {"a": 1}}, "text"), ({"text": 5}, "text"),
                       ({"text": "ok", "x": 1}, "x"), ({"text": "y" * 9000}, "text")]:
        c.append(("POST", "/v1/score", word, {"json": body}))
    c.append(("POST", "/v1/score", "JSON", raw(b"{")))
    # /v1/experts POST / PATCH
    bad_experts = [
        ({"name": "Bad Name", "domain": "law"}, "name"), ({"name": "x" * 80, "domain": "law"}, "name"),
        ({"name": "x", "domain": "a/b"}, "domain"), ({"name": "x", "domain": "../../etc"}, "domain"),
        ({"name": "x", "domain": ""}, "domain"), ({"name": "x"}, "domain"),
        ({"name": "x", "domain": "law", "backend": "gpu"}, "backend"),
        ({"name": "x", "domain": "law", "backend": "openai"}, "base_url"),
        ({**REMOTE, "name": "x", "size_params": 2**63}, "size_params"),
        ({**REMOTE, "name": "x", "size_params": -1}, "size_params"),
        ({**REMOTE, "name": "x", "size_params": 10**40}, "size_params"),
        ({**REMOTE, "name": "x", "cost": -1}, "cost"), ({**REMOTE, "name": "x", "cost": 1e300 * 10}, "cost"),
        ({**REMOTE, "name": "x", "profile": {"dir": 5}}, "profile"),
        ({**REMOTE, "name": "x", "profile": {"texts": [1, 2]}}, "profile"),
        ({**REMOTE, "name": "x", "profile": {"texts": "abc"}}, "profile"),
        ({**REMOTE, "name": "x", "profile": {"texts": []}}, "profile"),
        ({**REMOTE, "name": "x", "profile": {"dir": "/etc"}}, "outside the data directory"),
        ({**REMOTE, "name": "x", "profile": []}, "profile"),
        ({"name": "x", "domain": "law", "backend": "hf", "backend_kwargs": {"path": "/etc"}},
         "outside the data directory"),
        ({"name": "x", "domain": "law", "backend": "hf", "backend_kwargs": {"path": 7}}, "path"),
        ({"name": "x", "domain": "law", "backend": "qrh", "backend_kwargs": {"checkpoint": "/etc/passwd"}},
         "outside the data directory"),
        ({"name": "x", "domain": "law", "backend": "qrh"}, "checkpoint"),
        ({**REMOTE, "name": "x", "backend_kwargs": {**REMOTE["backend_kwargs"], "timeout": "abc"}}, "timeout"),
        ({**REMOTE, "name": "x", "backend_kwargs": {**REMOTE["backend_kwargs"], "timeout": -5}}, "timeout"),
        ({**REMOTE, "name": "x", "backend_kwargs": {**REMOTE["backend_kwargs"], "retries": "x"}}, "retries"),
        ({**REMOTE, "name": "x", "backend_kwargs": {"base_url": "file:///etc", "model": "m"}}, "base_url"),
        ({**REMOTE, "name": "x", "backend_kwargs": "abc"}, "backend_kwargs"),
        ({**REMOTE, "name": "x", "enabled": "sometimes"}, "enabled"),
        ({**REMOTE, "name": "x", "colour": "red"}, "colour"),
        ({**REMOTE, "name": "x", "description": "d" * 5000}, "description"),
        ({"name": "law", "domain": "law"}, "exists"),
    ]
    for body, word in bad_experts:
        c.append(("POST", "/v1/experts", word, {"json": body, "headers": AUTH}))
    for body, word in [(b'{"name": "x", "domain": "law", "cost": Infinity}', "cost"),
                       (b'{"name": "x", "domain": "law", "cost": 1e400}', "cost"),
                       (b'{"name": "x", "domain": "law", "cost": NaN}', "cost")]:
        c.append(("POST", "/v1/experts", word, {"content": body, "headers": {**J, **AUTH}}))
    for body, word in [({"size_params": 2**63}, "size_params"), ({"cost": -1}, "cost"),
                       ({"profile": {"dir": 5}}, "profile"), ({"profile": {"texts": [1]}}, "profile"),
                       ({"domain": "a/b"}, "domain"), ({"name": "y"}, "name"), ({"health": "ok"}, "health"),
                       ({"backend_kwargs": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": "abc"}},
                        "timeout"),
                       ({"backend_kwargs": {}}, "base_url"),
                       ({"profile": {"dir": "/etc"}}, "outside the data directory")]:
        c.append(("PATCH", "/v1/experts/cat-remote", word, {"json": body, "headers": AUTH}))
    c.append(("PATCH", "/v1/experts/cat-remote", "cost", {"content": b'{"cost": Infinity}', "headers": {**J, **AUTH}}))
    c.append(("PATCH", "/v1/experts/astrology", "unknown expert", {"json": {"cost": 1}, "headers": AUTH}))
    c.append(("DELETE", "/v1/experts/astrology", "unknown expert", {"headers": AUTH}))
    c.append(("GET", "/v1/experts/astrology", "unknown expert", {}))
    c.append(("GET", "/v1/experts/" + "x" * 300, "unknown expert", {}))
    c.append(("POST", "/v1/experts", "API key", {"json": {"name": "x", "domain": "law"}}))
    c.append(("DELETE", "/v1/experts/law", "API key", {"headers": {"Authorization": "Bearer wrong"}}))
    c.append(("DELETE", "/v1/experts/law", "API key", {"headers": {"X-API-Key": ""}}))
    # /v1/feedback
    for body, word, headers in [
        ({}, "request_id", AUTH), ({"request_id": "x"}, "rating", AUTH), ({"request_id": "x", "rating": "good"},
                                                                         "rating", AUTH),
        ({"request_id": "x", "rating": 1.5}, "rating", AUTH), ({"request_id": "x", "rating": -0.1}, "rating", AUTH),
        ({"request_id": "x", "rating": 1, "correct": True}, "correct", AUTH),
        ({"request_id": "x", "rating": 1, "subtask_index": -1}, "subtask_index", AUTH),
        ({"request_id": "x" * 100, "rating": 1}, "request_id", AUTH),
        ({"request_id": "never-routed", "rating": 1}, "no routed outcome", AUTH),
        ({"request_id": "never-routed", "rating": 1}, "token", {}),
        ({"request_id": "never-routed", "rating": 1, "token": "v1.1.abc"}, "expert", {}),
        ({"request_id": "never-routed", "rating": 1, "token": "v1.9999999999.abc", "expert": "law"}, "token", {}),
        ({"request_id": "x", "rating": 1, "bogus": 1}, "bogus", AUTH),
    ]:
        c.append(("POST", "/v1/feedback", word, {"json": body, "headers": headers}))
    c.append(("POST", "/v1/feedback", "rating", {"content": b'{"request_id": "x", "rating": NaN}',
                                                 "headers": {**J, **AUTH}}))
    # /v1/chat/completions
    for body, word in [
        ({"messages": []}, "messages"), ({}, "messages"), ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"messages": [{"role": "system", "content": "x"}]}, "user message"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "text"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": ["a"]}]}]}, "text"),
        ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "type"),
        ({"messages": [{"role": "user", "content": [5]}]}, "content"),
        ({"messages": [{"role": "user", "content": 5}]}, "content"),
        ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature"),
        ({"messages": [{"role": "user", "content": "x" * 9000}]}, "limit"),
        ({"messages": [{"role": "user", "content": "hi"}] * 100}, "limit"),
    ]:
        c.append(("POST", "/v1/chat/completions", word, {"json": body}))
    # methods, paths, headers
    for method, path in [("GET", "/v1/route"), ("PUT", "/v1/score"), ("DELETE", "/health"), ("POST", "/metrics"),
                         ("PUT", "/v1/feedback"), ("GET", "/v1/chat/completions"), ("POST", "/v1/models")]:
        c.append((method, path, "not allowed", {}))
    c.append(("GET", "/v1/nothing", "no endpoint", {}))
    c.append(("POST", "/v1/route", "body", {"content": b"query=x", "headers": {"content-type": "text/plain"}}))
    return c


def run_catalogue(url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cases": 0, "5xx": 0, "4xx": 0, "2xx": 0, "field_named": 0, "failures": []}
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post("/v1/experts", json=REMOTE, headers=AUTH)  # the target of the PATCH cases
        for method, path, word, kw in catalogue():
            r = client.request(method, path, **kw)
            out["cases"] += 1
            try:
                body = r.json()
            except ValueError:
                body = {}
            message = json.dumps(body.get("error", {})) if isinstance(body, dict) else ""
            if r.status_code >= 500:
                out["5xx"] += 1
                out["failures"].append({"case": f"{method} {path}", "status": r.status_code, "body": r.text[:300]})
            elif r.status_code >= 400:
                out["4xx"] += 1
                if word.lower() in message.lower():
                    out["field_named"] += 1
                else:
                    out["failures"].append({"case": f"{method} {path} {str(kw)[:120]}", "status": r.status_code,
                                            "expected": word, "message": message[:300]})
            else:
                out["2xx"] += 1
                out["failures"].append({"case": f"{method} {path} {str(kw)[:120]}", "status": r.status_code,
                                        "expected": f"4xx naming {word}"})
            if len(r.headers.get_list("x-request-id")) != 1:
                out["failures"].append({"case": f"{method} {path}", "problem": "x-request-id not sent exactly once"})
            if r.status_code == 405 and "allow" not in r.headers:
                out["failures"].append({"case": f"{method} {path}", "problem": "405 without Allow"})
        client.delete("/v1/experts/cat-remote", headers=AUTH)
    return out


# -- 2. forged feedback ------------------------------------------------------------------------------------

MUTEX = "What is a mutex?"


def _c_model(client: httpx.Client, expert: str) -> tuple[float, str]:
    body = client.post("/v1/score", json={"text": MUTEX}).json()
    row = next(e for e in body["experts"] if e["expert"] == expert)
    return row["C_model"], body["experts"][0]["expert"]


def run_forged_feedback(url: str, n: int = 27) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=300) as client:
        top0 = client.post("/v1/score", json={"text": MUTEX}).json()["experts"][0]["expert"]
        before, _ = _c_model(client, top0)
        no_auth: dict[str, int] = {}
        routed: list[tuple[str, dict[str, str]]] = []
        for _ in range(n):
            body = client.post("/v1/route", json={"query": MUTEX, "options": FAST}).json()
            routed.append((body["request_id"], {t["expert"]: t["token"] for t in body["feedback_tokens"]}))
            r = client.post("/v1/feedback", json={"request_id": body["request_id"], "rating": 0})
            no_auth[str(r.status_code)] = no_auth.get(str(r.status_code), 0) + 1
        after_forged, top_forged = _c_model(client, top0)
        with_token: dict[str, int] = {}
        for rid, tokens in routed:
            for expert, token in tokens.items():
                r = client.post("/v1/feedback", json={"request_id": rid, "rating": 0, "expert": expert, "token": token})
                with_token[str(r.status_code)] = with_token.get(str(r.status_code), 0) + 1
        after_token, top_token = _c_model(client, top0)
    return {"query": MUTEX, "expert": top0, "ratings_per_phase": n,
            "without_key_or_token": {"statuses": no_auth, "C_model_before": before, "C_model_after": after_forged,
                                     "top_expert_after": top_forged},
            "with_own_tokens": {"statuses": with_token, "C_model_after": after_token, "top_expert_after": top_token,
                                "note": "accepted ratings are bounded by the per-host bucket (burst 10, 30/min)"}}


# -- 3. abandoned request ----------------------------------------------------------------------------------

SHORT = {"query": "What is a mutex?", "options": {"use_llm": False, "max_tokens": 4}}
LONG = {"query": "Write a very long, detailed, multi-chapter essay on the history of operating systems, "
                 "covering every decade in depth.", "options": {"use_llm": False, "max_tokens": 2048}}


def run_abandoned(url: str, give_up_s: float = 5.0) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=600) as client:
        client.post("/v1/route", json=SHORT)  # the model is loaded
        idle = []
        for _ in range(3):
            t0 = time.perf_counter()
            assert client.post("/v1/route", json=SHORT).status_code == 200
            idle.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    try:
        httpx.post(url + "/v1/route", json=LONG, timeout=give_up_s)
        gave_up = False
    except httpx.TimeoutException:
        gave_up = True
    abandoned_after = time.perf_counter() - t0
    t1 = time.perf_counter()
    r = httpx.post(url + "/v1/route", json=SHORT, timeout=600)
    after = time.perf_counter() - t1
    idle_median = statistics.median(idle)
    return {"give_up_after_s": give_up_s, "client_gave_up": gave_up, "long_request_s": round(abandoned_after, 3),
            "idle_short_route_s": [round(x, 3) for x in idle], "idle_median_s": round(idle_median, 3),
            "short_route_after_abandon_s": round(after, 3), "status_after": r.status_code,
            "ratio": round(after / idle_median, 2), "within_2x": after <= 2 * idle_median}


# -- 4. schemathesis ---------------------------------------------------------------------------------------

def run_schemathesis(st: str | None, url: str, max_examples: int, out_dir: Path) -> dict[str, Any]:
    if not st:
        return {"ran": False, "why": "no --schemathesis binary given"}
    if not Path(st).exists():
        return {"ran": False, "why": f"{st} does not exist (pip install schemathesis into a separate venv)"}
    version = subprocess.run([st, "--version"], capture_output=True, text=True).stdout.strip()
    junit = out_dir / "schemathesis-junit.xml"
    cmd = [st, "run", f"{url}/openapi.json", "--checks", "all", "--experimental=openapi-3.1",
           "--hypothesis-max-examples", str(max_examples), "--hypothesis-deadline", "None",
           "--hypothesis-seed", "0", "-H", f"Authorization: Bearer {KEY}", "--junit-xml", str(junit),
           "--request-timeout", "120000", "--hypothesis-suppress-health-check", "all"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    tail = proc.stdout[-6000:]
    summary = {"ran": True, "version": version, "command": " ".join(cmd), "exit_code": proc.returncode,
               "seconds": round(time.perf_counter() - t0, 1), "output_tail": tail}
    for line in proc.stdout.splitlines()[::-1]:
        if "passed" in line or "failed" in line or "errored" in line:
            summary["result_line"] = line.strip("= ")
            break
    return summary


# -- 5. kill -9 mid-write ----------------------------------------------------------------------------------

def _burst(url: str, jobs: list[dict[str, Any]], *, kill: Server, kill_after: int, workers: int = 8) -> list[Any]:
    """POST the jobs concurrently; kill -9 the server once ``kill_after`` are acknowledged; returns the
    acknowledged jobs' keys."""
    acked: list[Any] = []
    lock = threading.Lock()
    killed = threading.Event()

    def send(job: dict[str, Any]) -> None:
        if killed.is_set():
            return
        try:
            r = httpx.post(url + job["path"], json=job["json"], headers=AUTH, timeout=30)
        except httpx.HTTPError:
            return
        if r.status_code in (200, 201):
            with lock:
                acked.append(job["key"])
                if len(acked) >= kill_after and not killed.is_set():
                    killed.set()
                    kill.kill9()

    with cf.ThreadPoolExecutor(workers) as ex:
        list(ex.map(send, jobs))
    if not killed.is_set():
        kill.kill9()
    return acked


def _integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def run_kill9_feedback(server: Server, n_routes: int = 40) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, timeout=300) as client:
        rids = [client.post("/v1/route", json={"query": MUTEX, "options": FAST}).json()["request_id"]
                for _ in range(n_routes)]
    jobs = [{"path": "/v1/feedback", "json": {"request_id": rid, "rating": 1.0}, "key": rid} for rid in rids]
    acked = _burst(server.url, jobs, kill=server, kill_after=n_routes // 2)
    path = server.home / "router" / "feedback.sqlite"
    db = sqlite3.connect(path)
    rated = {r[0] for r in db.execute("SELECT DISTINCT request_id FROM outcomes WHERE rating IS NOT NULL")}
    db.close()
    lost = [k for k in acked if k not in rated]
    return {"routed": n_routes, "acknowledged": len(acked), "found_after_kill": len(set(acked) & rated),
            "lost": len(lost), "rated_rows_total": len(rated), "integrity_check": _integrity(path)}


def run_kill9_registry(server: Server, n: int = 200) -> dict[str, Any]:
    jobs = [{"path": "/v1/experts", "key": f"k9-{i}",
             "json": {**REMOTE, "name": f"k9-{i}", "profile": {"texts": [f"text {i} about money and tax"]}}}
            for i in range(n)]
    acked = _burst(server.url, jobs, kill=server, kill_after=n // 3)
    path = server.home / "router" / "experts.sqlite"
    db = sqlite3.connect(path)
    names = {r[0] for r in db.execute("SELECT name FROM experts")}
    db.close()
    lost = [k for k in acked if k not in names]
    return {"sent_up_to": n, "acknowledged": len(acked), "found_after_kill": len(set(acked) & names),
            "lost": len(lost), "integrity_check": _integrity(path)}


# -- 6. damaged profile files -----------------------------------------------------------------------------

DAMAGES = {"law": ("centroid.safetensors", b"\x00garbage, not safetensors"), "finance": ("profile.json", b"[]")}


def damage_profiles(home: Path) -> list[str]:
    """Overwrite one file of two default profiles in ``home`` (a copy); returns the damaged files."""
    done = []
    for folder in sorted((home / "profiles").glob("*")):
        for domain, (name, content) in DAMAGES.items():
            if (folder / domain / name).is_file():
                (folder / domain / name).write_bytes(content)
                done.append(str((folder / domain / name).relative_to(home)))
    return done


def run_damaged_profiles(source: Path, log: Path) -> dict[str, Any]:
    """``qsef score`` and the server start on homes whose law and finance profiles are damaged."""
    out: dict[str, Any] = {}
    cli_home = make_home(source)
    try:
        out["damaged_files"] = damage_profiles(cli_home)
        env = {**os.environ, "QSEF_HOME": str(cli_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "api.cli", "score", "Can my landlord evict me?", "--json"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        top = None
        if proc.returncode == 0:
            top = json.loads(proc.stdout)["experts"][0]["expert"]
        out["cli_score"] = {"exit_code": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                            "top_expert": top, "traceback": "Traceback" in proc.stderr,
                            "warnings": [ln[:240] for ln in proc.stderr.splitlines() if "rebuilding" in ln][:4]}
    finally:
        shutil.rmtree(cli_home, ignore_errors=True)
    server_home = make_home(source)
    server = Server(server_home, log)
    try:
        damage_profiles(server_home)
        out["server_startup_s"] = round(server.start(), 1)
        h = httpx.get(server.url + "/health", timeout=30).json()
        r = httpx.post(server.url + "/v1/score", json={"text": "What is a capital gains tax?"}, timeout=120)
        out["server"] = {"health": h["status"], "reasons": h["reasons"], "score_status": r.status_code,
                         "top_expert": r.json()["experts"][0]["expert"] if r.status_code == 200 else None}
    finally:
        server.stop()
        shutil.rmtree(server_home, ignore_errors=True)
    return out


# -- main ----------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source-home", default=os.environ.get("QSEF_HOME") or str(Path.home() / ".local/share/qsef"),
                   help="data directory whose models, corpora and graphs are linked into the temporary home")
    p.add_argument("--schemathesis", help="path of the `st` binary (a separate venv); omitted: not run")
    p.add_argument("--max-examples", type=int, default=20, help="schemathesis examples per operation")
    p.add_argument("--budget-s", type=float, default=120.0,
                   help="the server's per-request budget (QSEF_API_ROUTE_BUDGET_S); past it a route is a 504")
    p.add_argument("--skip", nargs="*", default=[], choices=["catalogue", "forged", "abandoned", "schemathesis",
                                                             "kill9", "profiles"])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reliability.json"))
    args = p.parse_args(argv)

    home = make_home(Path(args.source_home))
    log = home / "server.log"
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    server = Server(home, log, budget_s=args.budget_s)
    try:
        results["startup_s"] = round(server.start(), 1)
        if "catalogue" not in args.skip:
            results["catalogue"] = run_catalogue(server.url)
            print("catalogue:", {k: v for k, v in results["catalogue"].items() if k != "failures"}, flush=True)
        if "forged" not in args.skip:
            results["forged_feedback"] = run_forged_feedback(server.url)
            print("forged feedback:", json.dumps(results["forged_feedback"]), flush=True)
        if "abandoned" not in args.skip:
            results["abandoned_request"] = run_abandoned(server.url)
            print("abandoned request:", json.dumps(results["abandoned_request"]), flush=True)
        if "schemathesis" not in args.skip:
            results["schemathesis"] = run_schemathesis(args.schemathesis, server.url, args.max_examples, home)
            print("schemathesis:", results["schemathesis"].get("result_line", results["schemathesis"].get("why")),
                  flush=True)
        if "kill9" not in args.skip:
            results["kill9_feedback"] = run_kill9_feedback(server)
            print("kill -9 during feedback:", json.dumps(results["kill9_feedback"]), flush=True)
            results["restart_after_kill_s"] = round(server.start(), 1)
            results["kill9_registry"] = run_kill9_registry(server)
            print("kill -9 during registry writes:", json.dumps(results["kill9_registry"]), flush=True)
            results["restart_after_kill2_s"] = round(server.start(), 1)
            h = httpx.get(server.url + "/health", timeout=30).json()
            results["health_after_restarts"] = {"status": h["status"], "experts": h["experts"],
                                                "reasons": h["reasons"]}
        server.stop()
        if "profiles" not in args.skip:
            results["damaged_profiles"] = run_damaged_profiles(Path(args.source_home), log)
            print("damaged profiles:", json.dumps(results["damaged_profiles"]), flush=True)
    except Exception as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        results["server_log_tail"] = log.read_text()[-3000:] if log.exists() else ""
        raise
    finally:
        server.stop()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
