"""Load test on loopback: 8 concurrent clients against /v1/score (micro-batched vs unbatched, in the
same run) and /v1/route (fast path, decomposition + QSEF scoring, no expert answers).

Two real ``qsef serve`` processes run side by side, one with the /v1/score micro-batcher
(``QSEF_API_BATCH_WINDOW_MS=5``) and one without (``=0``); score phases alternate between them in
slices so both see the same machine load. Every request carries a unique text, so the encoder's
cache cannot serve it. Besides requests/s and latency, each phase records the server process's CPU
time per request (user + system, from ``/proc``): on a shared machine whose load changes under the
run, that cost is the steadier measure of how much work batching saves. The 1-minute load average
is sampled before every slice. Prints and saves ``benchmarks/results/api_load.json``.

    .venv/bin/python benchmarks/api_load.py [--seconds 60] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save

TEXTS = [
    "What is the first-line treatment for high blood pressure",
    "Can my landlord keep my deposit without giving a reason",
    "How do I reverse a linked list in Python",
    "How are capital gains on index funds taxed",
    "What is the tallest mountain in Africa",
    "Is it safe to take ibuprofen with a fever",
    "What does a non-compete clause mean in a contract",
    "Explain the difference between a stock and a bond",
]


def start_server(port: int, batch_ms: float, log: Path, threads: int) -> subprocess.Popen:
    env = {**os.environ, "QSEF_API_BATCH_WINDOW_MS": str(batch_ms), "QSEF_ROUTER_BACKEND": "none",
           "QSEF_LOG_LEVEL": "WARNING", "QSEF_TORCH_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"server on {port} not healthy after {timeout}s")


class RawClient:
    """A minimal keep-alive HTTP/1.1 JSON client on asyncio streams: the load generator shares the
    machine with the server, so it should cost as little CPU as possible (httpx costs several ms a call)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_phase(url: str, make_body, clients: int, seconds: float, counter, pid: int | None = None) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    u = httpx.URL(url)

    async def worker():
        c = RawClient(u.host, u.port)
        try:
            while time.perf_counter() < deadline:
                body = make_body(next(counter))
                t0 = time.perf_counter()
                try:
                    status, payload = await asyncio.wait_for(c.post(u.path, body), 60)
                    if status != 200:
                        errors.append(f"{status}: {payload[:100]!r}")
                    else:
                        lat.append(time.perf_counter() - t0)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    await c.close()
                    c = RawClient(u.host, u.port)
        finally:
            await c.close()

    load = os.getloadavg()[0]
    cpu0 = cpu_seconds(pid) if pid else 0.0
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return {"ok": len(lat), "errors": errors, "wall_s": time.perf_counter() - t0, "lat": lat, "load": load,
            "cpu_s": (cpu_seconds(pid) - cpu0) if pid else None}


def summarize(parts: list[dict]) -> dict:
    lat = sorted(x for p in parts for x in p["lat"])
    wall = sum(p["wall_s"] for p in parts)
    errors = [e for p in parts for e in p["errors"]]
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
    out = {"requests": len(lat), "errors": len(errors), "error_samples": errors[:5], "seconds": round(wall, 1),
           "req_per_s": round(len(lat) / wall, 2), "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
           "load_avg_1m_per_slice": [round(p["load"], 2) for p in parts]}
    if all(p["cpu_s"] is not None for p in parts):
        out["server_cpu_ms_per_request"] = round(1000 * sum(p["cpu_s"] for p in parts) / max(1, len(lat)), 2)
    return out


async def main_async(args, pids: tuple[int, int]) -> dict:
    counter = itertools.count()

    def score_body(i):
        return {"text": f"{TEXTS[i % len(TEXTS)]} (case {i})?"}

    def route_body(i):
        return {"query": f"{TEXTS[i % len(TEXTS)]} (case {i})?", "options": {"answer": False}}

    batched, unbatched = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.port + 1}"
    for base in (batched, unbatched):  # warm both (encoder, profiles, first batch)
        await run_phase(f"{base}/v1/score", score_body, args.clients, 10, counter)
    slices = max(1, int(args.seconds // args.slice))
    parts: dict[str, list] = {"score_batched": [], "score_unbatched": []}
    for _ in range(slices):
        parts["score_batched"].append(await run_phase(f"{batched}/v1/score", score_body, args.clients,
                                                      args.seconds / slices, counter, pids[0]))
        parts["score_unbatched"].append(await run_phase(f"{unbatched}/v1/score", score_body, args.clients,
                                                        args.seconds / slices, counter, pids[1]))
    route = [await run_phase(f"{batched}/v1/route", route_body, args.clients, args.seconds, counter, pids[0])]
    out = {k: summarize(v) for k, v in parts.items()}
    out["route_fast_path"] = summarize(route)
    out["score_speedup_req_per_s"] = round(out["score_batched"]["req_per_s"] / out["score_unbatched"]["req_per_s"], 2)
    out["score_cpu_saving"] = round(out["score_unbatched"]["server_cpu_ms_per_request"]
                                    / out["score_batched"]["server_cpu_ms_per_request"], 2)
    metrics = httpx.get(f"{batched}/metrics").text
    sizes = [line for line in metrics.splitlines() if line.startswith("qsef_score_batch_size_sum")
             or line.startswith("qsef_score_batch_size_count")]
    out["batched_server_batch_size"] = sizes
    return out


def run_config(args, threads: int) -> dict:
    logs = Path("/tmp")
    procs = [start_server(args.port, args.window_ms, logs / "qsef_load_batched.log", threads),
             start_server(args.port + 1, 0.0, logs / "qsef_load_unbatched.log", threads)]
    try:
        for i, p in enumerate(procs):
            wait_healthy(args.port + i, p)
        return asyncio.run(main_async(args, (procs[0].pid, procs[1].pid)))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--slice", type=float, default=15, help="seconds per alternating score slice")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--port", type=int, default=8031)
    ap.add_argument("--window-ms", type=float, default=5.0, help="micro-batch window of the batched server")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="QSEF_TORCH_THREADS of both servers; one full run per value")
    args = ap.parse_args()
    runs = {}
    for t in args.threads:
        runs[f"torch_threads_{t}"] = run_config(args, t)
        r = runs[f"torch_threads_{t}"]
        print(f"threads={t}: score batched {r['score_batched']['req_per_s']} req/s, unbatched "
              f"{r['score_unbatched']['req_per_s']} req/s (x{r['score_speedup_req_per_s']}); server CPU "
              f"{r['score_batched']['server_cpu_ms_per_request']} vs {r['score_unbatched']['server_cpu_ms_per_request']} "
              f"ms/request (x{r['score_cpu_saving']}); route {r['route_fast_path']['req_per_s']} req/s", flush=True)
    save("api_load", {"runs": runs, "clients": args.clients, "seconds_per_endpoint": args.seconds,
                      "window_ms": args.window_ms,
                      "note": "route = fast path with answer=false (decomposition + QSEF scoring, no expert "
                              "generation); score phases alternate batched/unbatched servers in slices; "
                              "server_cpu_ms_per_request = server process user+system CPU / successful requests"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
