"""Compound-query latency end to end: router LLM and experts served by vLLM vs today's in-process dispatch.

Two routers on the demo's configuration (router LLM and the five default experts on the pinned
``router_model`` / ``expert_model``), side by side in one process and one run, alternating per question so
both see the same machine load:

* ``in_process``: ``router_backend=transformers`` — decomposition and every answer by transformers in this
  process (one shared model, one lock);
* ``vllm``: ``router_backend=vllm`` — the managed vLLM server (it must be running and healthy: ``qsef llm
  serve``; the run refuses to measure a fallback) decomposes, and the experts on its model are answered by
  it (:class:`experts.backends.ServedBackend`), the sub-tasks concurrently.

Each question is routed once per configuration with 64-token answers; per stage timings come from the
router's own ``timings_ms``. Registry and feedback live in a temporary folder. Saves
``benchmarks/results/compound_latency.json``.

    .venv/bin/python benchmarks/compound_latency.py [--questions 4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's packages, not an installed copy
from _common import save

QUESTIONS = (
    # the demo's compound questions (api/commands/route.py), then more of the same shape
    "What are the common side effects of metformin, and how do I read a CSV file in Python with pandas?",
    "Explain what a non-compete clause is. Also, what is the difference between a stock and a bond?",
    "My landlord kept my deposit without reason; can I sue him? And how much should I save each month "
    "to retire at 60?",
    "What causes high blood pressure, and what is the capital of Australia?",
    "How do I reverse a linked list in Python, and how are capital gains on index funds taxed?",
    "What is a tort? And what is the tallest mountain in Africa?",
    "Is ibuprofen safe with a fever, and what does a mutex do in concurrent code?",
    "What is inflation, and who wrote the Declaration of Independence?",
    "How do vaccines train the immune system, and what is a git rebase?",
    "What is a patent, and how does compound interest work?",
    "What are symptoms of dehydration, and what does HTTP status 404 mean?",
    "Can an employer read my work email? And what is the largest ocean on Earth?",
    "How do I write a unit test in Python, and what is a bond yield?",
    "What is the function of the liver, and what is a trust in estate planning?",
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    from core.settings import Settings
    from router.llm import ServedWithFallback
    from router.pipeline import RouteOptions, Router

    base = Settings()  # a benchmark is an entry point: settings are built here
    tmp = Path(tempfile.mkdtemp(prefix="qsef-bench-compound-"))
    routers = {
        name: Router.from_settings(base.model_copy(update={"router_backend": backend, "llm_url": None}),
                                   registry_path=tmp / f"{name}.sqlite", feedback_path=tmp / f"{name}-fb.sqlite")
        for name, backend in (("in_process", "transformers"), ("vllm", "vllm"))
    }
    llm = routers["vllm"].decomposer.llm
    if not isinstance(llm, ServedWithFallback) or llm.on_fallback:
        raise SystemExit(f"the vLLM server is not reachable ({llm.describe()}): start it with `qsef llm serve`")
    opts = RouteOptions(max_tokens=args.max_tokens)
    routers["in_process"].route("Warm up: what is a tort?", RouteOptions(max_tokens=4))  # model load
    routers["vllm"].route("Warm up: what is a tort?", RouteOptions(max_tokens=4))
    rows: list[dict] = []
    for i, q in enumerate(QUESTIONS[: args.questions]):
        order = ("vllm", "in_process") if i % 2 else ("in_process", "vllm")
        for name in order:
            t0 = time.perf_counter()
            res = routers[name].route(q, opts)
            rows.append({"config": name, "question": q, "wall_s": round(time.perf_counter() - t0, 2),
                         "timings_ms": res.timings_ms, "decomposition_path": res.decomposition_path,
                         "subtasks": [(s.text, s.expert) for s in res.subtasks]})
            print(f"{name:10s} {rows[-1]['wall_s']:7.1f}s {res.decomposition_path:16s} {q[:60]}", file=sys.stderr)
    summary = {}
    for name in routers:
        mine = [r for r in rows if r["config"] == name]
        walls = [r["wall_s"] for r in mine]
        summary[name] = {
            "n": len(mine), "p50_s": _pct(walls, 0.5), "p95_s": _pct(walls, 0.95),
            "stage_p50_ms": {k: round(statistics.median(r["timings_ms"][k] for r in mine), 1)
                             for k in ("decompose", "score", "dispatch", "aggregate")},
            "two_subtasks": sum(len(r["subtasks"]) == 2 for r in mine),
        }
    for r in routers.values():
        r.close()
    save("compound_latency", {"max_tokens": args.max_tokens, "router_llm_vllm": llm.describe(),
                              "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
