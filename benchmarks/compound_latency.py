"""Compound-query latency end to end, per configuration of the router LLM and the experts, side by side.

Configurations (``--configs``; each a :class:`router.pipeline.Router` built from settings in this process,
routing the same questions in rotating order so all see the same machine load):

* ``ct2`` — the demo's configuration: router LLM and experts in process on the CTranslate2 int8 engine
  (``local_engine=ctranslate2``), decomposition without domain labels and with the router LLM's
  instructions cached, the sub-tasks of a question decoded in one batch; the router LLM is asked only
  where the clause splitter's parts are not clearly separate requests (``router.clear_split``);
* ``ct2_all_cores`` — the demo's configuration with CTranslate2 decoding on ``llm_threads`` threads (every
  core, at most 4) instead of the count :func:`experts.ct2.decode_threads` measured fastest here: the demo
  before that measurement;
* ``ct2_llm_split`` — the same as ``ct2``, with the router LLM asked for every query the splitter finds several
  parts in (``clear_split`` off: the demo before that check);
* ``int8_torch`` — the same on torch's dynamic int8 (``local_engine=transformers``): the demo before;
* ``vllm_router_ct2`` — ``qsef serve``'s default: the router LLM on the vLLM server (fp32), the experts in
  process on CTranslate2 (``experts_on_server=auto``);
* ``fp32`` — the in-process dispatch before int8 (transformers fp32, labelled decomposition);
* ``vllm`` — router LLM and experts on the vLLM server (fp32, labelled decomposition), concurrently.

The ``vllm*`` configurations need the server running and healthy (``qsef llm serve``); the run refuses to
measure a fallback. Each compound question is routed once per configuration with 64-token answers (the
demo's), then ``--singles`` single questions on the fast path. Per-stage timings come from the router's own
``timings_ms``. Registry and feedback live in a temporary folder. Saves
``benchmarks/results/compound_latency.json``.

    .venv/bin/python benchmarks/compound_latency.py [--configs ct2 int8_torch] [--questions 14] [--singles 10]
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


SINGLES = (
    "What is the capital of Australia?",
    "What are the symptoms of the flu?",
    "How do I reverse a string in Python?",
    "What is a Roth IRA?",
    "What does a notary public do?",
    "Who painted the Mona Lisa?",
    "What is the normal resting heart rate?",
    "What is a SQL join?",
    "What is the difference between a will and a trust?",
    "What is an index fund?",
)

CONFIGS = {  # name: (router_backend, local_precision, local_engine, experts_on_server, decompose_labels, clear_split)
    "ct2": ("transformers", "int8", "ctranslate2", "auto", False, True),
    "ct2_all_cores": ("transformers", "int8", "ctranslate2", "auto", False, True),  # + decode_threads=llm_threads
    "ct2_llm_split": ("transformers", "int8", "ctranslate2", "auto", False, False),  # the LLM splits every time
    "int8_torch": ("transformers", "int8", "transformers", "auto", False, True),
    "vllm_router_ct2": ("vllm", "int8", "ctranslate2", "auto", False, True),
    "fp32": ("transformers", "fp32", "transformers", "auto", True, True),
    "vllm": ("vllm", "fp32", "transformers", "always", True, True),
}


def _summary(rows: list[dict]) -> dict:
    walls = [r["wall_s"] for r in rows]
    return {
        "n": len(rows), "p50_s": _pct(walls, 0.5), "p95_s": _pct(walls, 0.95),
        "stage_p50_ms": {k: round(statistics.median(r["timings_ms"].get(k, 0.0) for r in rows), 1)
                         for k in ("decompose", "score", "dispatch", "aggregate")},
        "paths": {p: sum(r["decomposition_path"] == p for r in rows) for p in {r["decomposition_path"] for r in rows}},
        "subtask_counts": [len(r["subtasks"]) for r in rows],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["ct2", "int8_torch"], choices=list(CONFIGS),
                        help="the first is measured on every question, the others on --baseline-questions")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--singles", type=int, default=len(SINGLES))
    parser.add_argument("--baseline-questions", type=int, default=None,
                        help="route only the first N compound and N single questions with every "
                             "configuration but the first (the baselines are slow)")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    from core.settings import RouterSettings, Settings
    from router.llm import ServedWithFallback
    from router.pipeline import RouteOptions, Router

    base = Settings()  # a benchmark is an entry point: settings are built here
    tmp = Path(tempfile.mkdtemp(prefix="qsef-bench-compound-"))
    routers, threads_of = {}, {}  # threads_of: the decode threads each configuration ran with
    for name in args.configs:
        backend, precision, engine, on_server, labels, clear_split = CONFIGS[name]
        threads = base.llm_threads if name == "ct2_all_cores" else base.decode_threads
        settings = base.model_copy(update={
            "decode_threads": threads, "router_backend": backend, "llm_url": None, "local_precision": precision, "local_engine": engine,
            "router": RouterSettings(**{**base.router.model_dump(), "experts_on_server": on_server,
                                        "decompose_labels": labels, "clear_split": clear_split})})
        routers[name] = Router.from_settings(settings, registry_path=tmp / f"{name}.sqlite",
                                             feedback_path=tmp / f"{name}-fb.sqlite")
        if engine == "ctranslate2":
            from core.store import ModelStore
            from experts.ct2 import converted_folder, decode_threads

            threads_of[name] = decode_threads(settings, converted_folder(
                settings, Path(ModelStore(settings).ensure(settings.expert_model))))
        llm = routers[name].decomposer.llm
        if backend == "vllm" and (not isinstance(llm, ServedWithFallback) or llm.on_fallback):
            raise SystemExit(f"the vLLM server is not reachable ({llm.describe()}): start it with `qsef llm serve`")
        t0 = time.perf_counter()
        routers[name].scorer.warm()
        routers[name].route("What is GDP? And what is a tort?", RouteOptions(max_tokens=4))  # model load, warm-up
        print(f"{name}: warm after {time.perf_counter() - t0:.1f} s ({llm.describe()})", file=sys.stderr)
    opts = RouteOptions(max_tokens=args.max_tokens)
    baseline_n = args.baseline_questions or args.questions
    rows: list[dict] = []
    for kind, questions in (("compound", QUESTIONS[: args.questions]), ("single", SINGLES[: args.singles])):
        for i, q in enumerate(questions):
            names = list(routers)
            order = names[i % len(names):] + names[: i % len(names)]
            for name in order:
                if name != args.configs[0] and i >= baseline_n:
                    continue
                t0 = time.perf_counter()
                res = routers[name].route(q, opts)
                rows.append({"config": name, "kind": kind, "question": q,
                             "wall_s": round(time.perf_counter() - t0, 2), "timings_ms": res.timings_ms,
                             "decomposition_path": res.decomposition_path,
                             "subtasks": [(s.text, s.expert) for s in res.subtasks],
                             "answers": [(s.answer or "")[:200] for s in res.subtasks]})
                print(f"{name:17s} {kind:8s} {rows[-1]['wall_s']:7.1f}s {res.decomposition_path:16s} {q[:60]}",
                      file=sys.stderr)
    summary = {name: {kind: _summary([r for r in rows if r["config"] == name and r["kind"] == kind])
                      for kind in ("compound", "single") if any(r["config"] == name and r["kind"] == kind
                                                                for r in rows)}
               for name in routers}
    for r in routers.values():
        r.close()
    save("compound_latency", {"max_tokens": args.max_tokens, "configs": {n: CONFIGS[n] for n in routers},
                              "torch_threads": base.torch_threads, "llm_threads": base.llm_threads,
                              "decode_threads": threads_of,
                              "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
