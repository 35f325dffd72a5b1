"""Load shift between two vLLM expert servers: one saturated by a background load, routing with and without
the live load in ``C_model``; then one vLLM server killed under load.

``qsef fleet up`` (``router.fleet``) starts two real vLLM servers (SmolLM2-135M on CPU, ``--max-num-seqs 2`` so
a queue forms) on ports 8032 and 8033 and registers one law expert on each: ``law-a`` (profiled on texts close
to the questions, so static scoring prefers it) and ``law-b``. Background clients keep ``law-a``'s server
busy (8 concurrent 64-token generations). Law questions are then routed through a real
:class:`router.pipeline.Router` (answers of 16 tokens), first with the live load off (size and history only:
the seeds' C_model), then on (``experts.load.LiveLoad``: ``/metrics`` every 2 s). Recorded per phase: the share
of sub-tasks sent to the saturated expert, the ``shed_load`` flags, and the p50/p95 route latency. Last,
``law-b``'s server is killed with SIGKILL and more questions are routed: they are answered by the next-best
expert (flagged ``fell_back``) or the request fails — counted.

    .venv/bin/python benchmarks/fleet_load_shift.py [--questions 12]

Prints and saves ``benchmarks/results/fleet_load_shift.json``. Takes ~10 min on 2 cores (two vLLM starts).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import save

QUESTIONS = [
    "Can my landlord evict me without a court order?",
    "Is a verbal contract legally binding?",
    "Can I sue my employer for unpaid overtime?",
    "What does a tenant need to prove for a deposit claim in court?",
    "Is breaking a lease a breach of contract?",
    "Can a landlord keep my deposit for normal wear and tear?",
]
CLOSE = ["landlord tenant eviction court order deposit lease contract sue employer breach legal claim",
         "can my landlord evict me, keep my deposit, is a contract binding, can I sue in court"]
GENERIC = ["statute regulation jurisprudence constitutional doctrine appellate", "treaty sovereignty tribunal"]


def fleet_yaml(model: str) -> str:
    return f"""servers:
  - name: a
    model: {model}
    port: 8032
    extra_args: ["--max-num-seqs", "2"]
    experts:
      - {{name: law-a, domain: law, size_params: 135000000, profile: {{texts: {CLOSE!r}}}}}
  - name: b
    model: {model}
    port: 8033
    extra_args: ["--max-num-seqs", "2"]
    experts:
      - {{name: law-b, domain: law, size_params: 135000000, profile: {{texts: {GENERIC!r}}}}}
"""


def background_load(base_url: str, model: str, stop: threading.Event, n: int = 8) -> list[threading.Thread]:
    def loop():
        with httpx.Client(timeout=300) as c:
            while not stop.is_set():
                try:
                    c.post(base_url + "/chat/completions", json={
                        "model": model, "max_tokens": 64,
                        "messages": [{"role": "user", "content": "Write a long story about a court case."}]})
                except httpx.HTTPError:
                    time.sleep(0.5)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def route_phase(router, questions: list[str], opts) -> dict:
    experts, lat, flags, fell_back, failed = [], [], [], 0, 0
    for q in questions:
        t0 = time.perf_counter()
        try:
            r = router.route(q, opts)
        except Exception as exc:  # counted: a request the router could not serve
            failed += 1
            flags.append(f"error:{type(exc).__name__}")
            continue
        lat.append(time.perf_counter() - t0)
        sub = r.subtasks[0]
        experts.append(sub.expert)
        fell_back += int(sub.fell_back)
        flags.extend(f for f in sub.flags if f.startswith(("shed_load", "saturated", "live_load")))
    q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else lat * 19
    return {"n": len(questions), "served": len(lat), "failed": failed, "fell_back": fell_back,
            "share_to_law_a": round(experts.count("law-a") / max(1, len(experts)), 3),
            "experts": experts, "p50_s": round(statistics.median(lat), 2) if lat else None,
            "p95_s": round(q[18], 2) if lat else None,
            "flag_counts": {f: flags.count(f) for f in sorted(set(flags))}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=12)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()

    from core.settings import Settings
    from experts.load import LiveLoad
    from experts.registry import ExpertRegistry
    from router.fleet import FleetManager, load_fleet
    from router.pipeline import RouteOptions, Router

    tmp = Path(tempfile.mkdtemp(prefix="qsef-load-shift-"))
    (tmp / "fleet.yaml").write_text(fleet_yaml(args.model))
    settings = Settings().model_copy(update={"router_backend": "none"})
    registry = ExpertRegistry(tmp / "experts.sqlite")
    fleet = FleetManager(load_fleet(tmp / "fleet.yaml"), settings=settings, registry=registry,
                         source=str(tmp / "fleet.yaml"))
    stop = threading.Event()
    out: dict = {"model": args.model, "questions_per_phase": args.questions}
    try:
        t0 = time.perf_counter()
        fleet.up(timeout=1800)
        out["fleet_up_s"] = round(time.perf_counter() - t0, 1)
        router = Router.from_settings(settings, registry_path=tmp / "experts.sqlite",
                                      feedback_path=tmp / "feedback.sqlite", seed_defaults=False, timeout_s=120)
        live = router.scorer.live_load or LiveLoad()
        router.scorer.live_load = None
        opts = RouteOptions(use_llm=False, max_tokens=16)
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.questions)]
        route_phase(router, questions[:2], opts)  # warm: encoder, profiles, both servers idle
        out["idle_static"] = route_phase(router, questions[:4], opts)
        background_load("http://127.0.0.1:8032/v1", args.model, stop)
        time.sleep(10)
        out["load_on_a_before"] = {k: v.__dict__ for k, v in LiveLoad(ttl_s=0.01).for_experts(registry.list()).items()}
        out["saturated_static"] = route_phase(router, questions, opts)
        router.scorer.live_load = live
        out["saturated_live_load"] = route_phase(router, questions, opts)
        for row in fleet.status():
            if row["server"] == "b" and row["pid"]:
                os.killpg(row["pid"], signal.SIGKILL)  # its process group: the engine's children too
                out["killed_vllm_server_b_pid"] = row["pid"]
        time.sleep(1)
        out["after_killing_b_live_load"] = route_phase(router, questions[: max(4, args.questions // 2)], opts)
        a, b = out["saturated_static"], out["saturated_live_load"]
        out["summary"] = {"share_to_saturated_static": a["share_to_law_a"], "share_to_saturated_live": b["share_to_law_a"],
                          "p95_static_s": a["p95_s"], "p95_live_s": b["p95_s"],
                          "p95_change": (round(b["p95_s"] / a["p95_s"], 2) if a["p95_s"] and b["p95_s"] else None)}
        router.close()
    finally:
        stop.set()
        fleet.down()
    save("fleet_load_shift", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
