"""Router workers on the shared store: throughput with 1 vs 2 workers on PostgreSQL and SQLite vs PostgreSQL
at 1 worker, then faults under load — one worker killed with SIGKILL mid-run — with every acknowledged
rating counted in PostgreSQL afterwards.

Three real ``qsef serve`` servers run side by side on one throwaway PostgreSQL cluster (``core.pglocal``)
and one SQLite data directory: ``pg1`` (PostgreSQL, 1 worker), ``pg2`` (PostgreSQL, ``--workers 2``) and
``sqlite1`` (the embedded default, 1 worker). Phases alternate between them in slices, so all three see the
same machine load; every request carries a unique text (no encoder cache hits). Endpoints: ``/v1/score`` and
the fast path of ``/v1/route`` (single question, no router LLM, ``answer: false``). The load generator is
``api_load.py``'s (8 keep-alive clients on asyncio streams).

Fault phase (``pg2``): the experts are OpenAI-compatible echo servers, so every ``/v1/route`` answers and
records outcomes; each answered route is then rated through ``/v1/feedback`` with an ``Idempotency-Key``;
a request that fails (connection reset by the killed worker, 503) is retried with the same key. Midway, one
worker is sent SIGKILL. Afterwards the rated rows in PostgreSQL are counted against the ratings the server
acknowledged (200).

    .venv/bin/python benchmarks/fleet_throughput.py [--seconds 20] [--clients 8] [--fault-seconds 30]

Prints and saves ``benchmarks/results/fleet_throughput.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save
from api_load import TEXTS, run_phase, summarize
from reliability import make_home

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY = "fleet-bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ECHO = r"""
import sys
import uvicorn
from fastapi import FastAPI
app = FastAPI()

@app.get("/v1/models")
def models():
    return {"object": "list", "data": []}

@app.post("/v1/chat/completions")
def chat(body: dict):
    q = body["messages"][-1]["content"]
    return {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": q[:40]}}]}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    from core.pglocal import _free_port

    return _free_port()


class Serve:
    """One ``qsef serve`` (its own process group)."""

    def __init__(self, name: str, home: Path, log_dir: Path, *, workers: int = 1, database_url: str | None = None):
        self.name, self.workers, self.port = name, workers, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "QSEF_HOME": str(home), "QSEF_API_KEY": KEY, "QSEF_ROUTER_BACKEND": "none",
               "QSEF_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "QSEF_API_HEALTH_INTERVAL_S": "10"}
        if database_url:
            env["QSEF_DATABASE_URL"] = database_url
        else:
            env.pop("QSEF_DATABASE_URL", None)
        self.log = log_dir / f"serve-{name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(self.port),
                                      "--workers", str(workers), "--run-dir", str(log_dir / f"run-{name}")],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("w"),
                                     start_new_session=True)

    def wait(self, timeout: float = 900) -> float:
        """Until every worker answers (distinct X-QSEF-Worker values); returns the seconds it took."""
        t0 = time.perf_counter()
        seen: set[str] = set()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with httpx.Client(timeout=5) as c:  # a fresh connection each: the kernel spreads them
                    r = c.get(self.url + "/health")
                if r.status_code == 200:
                    seen.add(r.headers["x-qsef-worker"])
                    if len(seen) >= self.workers:
                        return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name}: {len(seen)} of {self.workers} workers answered in {timeout} s")

    def worker_pids(self) -> list[int]:
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(k) for k in kids if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text(errors="replace")]

    def cpu_pids(self) -> list[int]:
        return [self.proc.pid, *self.worker_pids()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def metric_sum(url: str, route: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    pattern = rf'qsef_http_requests_total\{{method="POST",route="{re.escape(route)}",status="200"\}} ([0-9.e+]+)'
    return sum(float(v) for v in re.findall(pattern, text))


def seed_echo_experts(registry, echo_url: str) -> None:
    """The five domain experts on the echo server (so routes answer in microseconds and record outcomes)."""
    from core.domains import DOMAIN_DESCRIPTIONS, DOMAINS
    from experts.registry import DOMAIN_PROMPTS, ExpertSpec

    for d in DOMAINS:
        registry.add(ExpertSpec(name=d, domain=d, backend="openai", description=DOMAIN_DESCRIPTIONS[d],
                                system_prompt=DOMAIN_PROMPTS[d], size_params=494_000_000,
                                backend_kwargs={"base_url": echo_url, "model": "echo", "timeout": 10, "retries": 0}),
                     replace=True)
    registry.ensure_default_fleet()  # records "seeded": no default hf experts are added next to them


async def throughput(servers: list[Serve], clients: int, seconds: float, slice_s: float) -> dict:
    counter = itertools.count()

    def score_body(i):
        return {"text": f"{TEXTS[i % len(TEXTS)]} (case {i})?"}

    def route_body(i):
        return {"query": f"{TEXTS[i % len(TEXTS)]} (case {i})?", "options": {"use_llm": False, "answer": False}}

    for s in servers:  # warm: encoder, profiles, first batches, every worker
        await run_phase(f"{s.url}/v1/score", score_body, clients, 5, counter)
        await run_phase(f"{s.url}/v1/route", route_body, clients, 3, counter)
    before = {s.name: {r: metric_sum(s.url, r) for r in ("/v1/score", "/v1/route")} for s in servers}
    slices = max(1, int(seconds // slice_s))
    parts: dict[str, list] = {}
    for path, body in (("/v1/score", score_body), ("/v1/route", route_body)):
        for _ in range(slices):
            for s in servers:
                parts.setdefault(f"{s.name} {path}", []).append(
                    await run_phase(f"{s.url}{path}", body, clients, seconds / slices, counter))
    out: dict = {k: summarize(v) for k, v in parts.items()}
    out["metrics_check"] = {}
    for s in servers:
        for r in ("/v1/score", "/v1/route"):
            counted = metric_sum(s.url, r) - before[s.name][r]
            out["metrics_check"][f"{s.name} {r}"] = {"client_ok": out[f"{s.name} {r}"]["requests"],
                                                     "metrics_delta": counted}
    for path in ("/v1/score", "/v1/route"):
        out[f"speedup 2 vs 1 workers {path}"] = round(out[f"pg2 {path}"]["req_per_s"] / out[f"pg1 {path}"]["req_per_s"], 2)
        out[f"sqlite / postgresql at 1 worker {path}"] = round(
            out[f"sqlite1 {path}"]["req_per_s"] / out[f"pg1 {path}"]["req_per_s"], 2)
    return out


def fault_phase(server: Serve, pg_url: str, clients: int, seconds: float) -> dict:
    """Routes (answered by the echo experts) + idempotent ratings from ``clients`` threads; SIGKILL one
    worker at half time; retries with the same key; then count the rated rows in PostgreSQL."""
    from router.feedback import FeedbackStore

    deadline = time.time() + seconds
    kill_at = time.time() + seconds / 2
    lock = threading.Lock()
    stats = {"routes_ok": 0, "route_failures_retried": 0, "ratings_acked": 0, "rating_failures_retried": 0,
             "gave_up": 0, "served_after_kill": 0, "failure_samples": []}
    acked: set[str] = set()
    killed: dict = {}

    def call(c: httpx.Client, path: str, body: dict, headers: dict | None = None) -> httpx.Response | None:
        for attempt in range(6):
            try:
                r = c.post(server.url + path, json=body, headers=headers, timeout=60)
                if r.status_code == 200:
                    return r
                why = f"{r.status_code} {r.text[:120]}"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"[:160]
            with lock:
                stats["route_failures_retried" if path == "/v1/route" else "rating_failures_retried"] += 1
                if len(stats["failure_samples"]) < 6:
                    stats["failure_samples"].append(why)
            time.sleep(0.2 * (attempt + 1))
        with lock:
            stats["gave_up"] += 1
        return None

    def client(t: int):
        i = 0
        while time.time() < deadline:
            i += 1
            with httpx.Client() as c:  # a new connection per request: the kernel spreads them over the workers
                r = call(c, "/v1/route", {"query": f"{TEXTS[(t + i) % len(TEXTS)]} (fault {t}-{i})?",
                                          "options": {"use_llm": False, "max_tokens": 4}})
                if r is None:
                    continue
                rid = r.json()["request_id"]
                with lock:
                    stats["routes_ok"] += 1
                    if killed:
                        stats["served_after_kill"] += 1
                fb = call(c, "/v1/feedback", {"request_id": rid, "rating": 1.0},
                          headers={**AUTH, "Idempotency-Key": f"rate-{rid}"})
                if fb is not None:
                    with lock:
                        stats["ratings_acked"] += 1
                        acked.add(rid)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(clients)]
    for th in threads:
        th.start()
    while time.time() < kill_at:
        time.sleep(0.2)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    killed["pid"], killed["at"] = victim, time.time()
    for th in threads:
        th.join()
    store = FeedbackStore(pg_url)
    with store.db.transaction() as c:
        from sqlalchemy import text

        rated_ids = {r[0] for r in c.execute(text("SELECT DISTINCT request_id FROM outcomes WHERE rating IS NOT NULL"))}
        rated_rows = c.execute(text("SELECT COUNT(*) FROM outcomes WHERE rating IS NOT NULL")).scalar_one()
        keys = c.execute(text("SELECT COUNT(*) FROM rating_keys")).scalar_one()
    store.close()
    stats.update({"killed_worker_pid": victim, "acknowledged_requests_rated": len(acked),
                  "acknowledged_requests_missing_in_postgresql": len(acked - rated_ids),
                  "rated_outcome_rows_in_postgresql": rated_rows, "idempotency_keys_in_postgresql": keys,
                  "worker_pids_after": server.worker_pids()})
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20, help="seconds per server and endpoint (60 in the issue; "
                                                               "less on a shared 2-core machine)")
    ap.add_argument("--slice", type=float, default=10, help="seconds per alternating slice")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--fault-seconds", type=float, default=30)
    args = ap.parse_args()

    from core.pglocal import LocalPostgres
    from experts.registry import ExpertRegistry

    source = Path(os.environ.get("QSEF_HOME") or Path.home() / ".local/share/qsef")
    home = make_home(source)
    if (source / "history").exists() and not (home / "history").exists():
        (home / "history").symlink_to(source / "history")  # the encoded seed history (minutes to rebuild)
    logs = Path(tempfile.mkdtemp(prefix="qsef-fleet-bench-"))
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO, str(echo_port)], stdout=subprocess.DEVNULL,
                            stderr=(logs / "echo.log").open("w"), start_new_session=True)
    echo_url = f"http://127.0.0.1:{echo_port}/v1"
    servers: list[Serve] = []
    with LocalPostgres() as pg:
        urls = {"pg1": pg.create_database("bench_pg1"), "pg2": pg.create_database("bench_pg2")}
        for url in urls.values():
            seed_echo_experts(ExpertRegistry(url), echo_url)
        seed_echo_experts(ExpertRegistry(home / "router" / "experts.sqlite"), echo_url)
        try:
            servers = [Serve("pg1", home, logs, database_url=urls["pg1"]),
                       Serve("pg2", home, logs, workers=2, database_url=urls["pg2"]),
                       Serve("sqlite1", home, logs)]
            started = {s.name: round(s.wait(), 1) for s in servers}
            results = asyncio.run(throughput(servers, args.clients, args.seconds, args.slice))
            for s in servers:
                if s.name != "pg2":
                    s.stop()
            fault = fault_phase(servers[1], urls["pg2"], args.clients, args.fault_seconds)
        finally:
            for s in servers:
                s.stop()
            echo.terminate()
    results = {"seconds_per_server_and_endpoint": args.seconds, "clients": args.clients,
               "note": (f"{args.seconds:g} s per server and endpoint instead of the issue's 60 s: a shared 2-core "
                        "machine; the three servers and the load generator share those cores"),
               "startup_s": started, "throughput": results, "fault_kill9_one_worker": fault,
               "zero_errors": all(v.get("errors", 0) == 0 for k, v in results.items() if isinstance(v, dict)
                                  and "errors" in v)}
    save("fleet_throughput", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
