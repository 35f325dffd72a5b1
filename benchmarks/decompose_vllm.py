"""Decomposition quality and latency: clause splitter vs Qwen-0.5B and Qwen-1.5B router LLMs served by vLLM.

One run: the clause splitter on every row, then for each model a vLLM server is started (float32,
eager), every row is decomposed with the JSON schema (``concurrency`` requests in flight), single-query
latency of the LLM path is measured on a few compound rows, the fast path on single questions, and the
server is stopped. Prints and saves ``benchmarks/results/decompose_vllm.json``.

    .venv/bin/python benchmarks/decompose_vllm.py [--models qwen-0.5b qwen-1.5b] [--limit N] [--port 8021]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from core.domains import DOMAIN_DESCRIPTIONS, DOMAINS
from core.settings import Settings
from corpora.evalsets import data_file
from router.decompose import Decomposer
from router.evaluate import evaluate_decomposition, load_rows
from router.llm import NoRouterLLM, OpenAIRouterLLM

RESULTS = Path(__file__).parent / "results" / "decompose_vllm.json"


def latency(decomposer: Decomposer, queries: list[str], *, use_llm: bool = True) -> dict:
    ms, paths = [], []
    for q in queries:
        d = decomposer.decompose(q, use_llm=use_llm)
        ms.append(d.latency_ms)
        paths.append(d.path)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "paths": {p: paths.count(p) for p in set(paths)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["qwen-0.5b", "qwen-1.5b"])
    ap.add_argument("--file", default=str(data_file("compound_queries.jsonl")))
    ap.add_argument("--limit", type=int)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--port", type=int, default=8021)
    ap.add_argument("--latency-n", type=int, default=5, help="compound rows timed one at a time on the LLM path")
    args = ap.parse_args()

    from router.llm.server import VLLMServer

    rows = load_rows(args.file)[: args.limit] if args.limit else load_rows(args.file)
    domains = list(DOMAINS)
    single = [r["query"] for r in rows if len(r["domains"]) == 1]
    compound = [r["query"] for r in rows if len(r["domains"]) > 1]
    out: dict = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "file": args.file, "n": len(rows), "concurrency": args.concurrency, "results": {},
    }
    import tempfile

    from experts.registry import ExpertRegistry
    from router.scoring import RegistryScorer

    registry = ExpertRegistry(Path(tempfile.mkdtemp()) / "experts.sqlite")
    registry.ensure_default_fleet()
    scorer = RegistryScorer(registry)  # QSEF with the default profiles: domains as routing would pick them
    scorer.warm()
    splitter = Decomposer(NoRouterLLM(), domains, descriptions=DOMAIN_DESCRIPTIONS)
    res = evaluate_decomposition(rows, splitter, use_llm=False, keep_rows=True, scorer=scorer)
    out["results"]["clause_splitter"] = res
    out["fast_path_latency"] = latency(Decomposer(NoRouterLLM(), domains), [q for q in single][:50])
    print(f"clause_splitter: count {res['count_accuracy']:.3f} domain-set {res['domain_set_accuracy']:.3f}",
          flush=True)

    for model in args.models:
        server = VLLMServer(model, settings=Settings(), port=args.port)
        t0 = time.perf_counter()
        server.start(timeout=900)
        startup = time.perf_counter() - t0
        print(f"{model}: vLLM healthy after {startup:.0f} s", flush=True)
        try:
            llm = OpenAIRouterLLM(server.base_url, model, timeout=300, retries=0)
            dec = Decomposer(llm, domains, descriptions=DOMAIN_DESCRIPTIONS)
            dec.decompose(compound[0])  # warm-up
            res = evaluate_decomposition(rows, dec, concurrency=args.concurrency, keep_rows=True, scorer=scorer)
            raw = Decomposer(llm, domains, descriptions=DOMAIN_DESCRIPTIONS, fast_path=False)
            res["llm_path_latency_single"] = latency(raw, compound[: args.latency_n])
            res["vllm_startup_s"] = round(startup, 1)
            out["results"][f"vllm:{model}"] = res
            print(f"{model}: count {res['count_accuracy']:.3f} domain-set {res['domain_set_accuracy']:.3f} "
                  f"paths {res['paths']} single-query LLM p50 {res['llm_path_latency_single']['p50_ms']:.0f} ms",
                  flush=True)
        finally:
            server.stop()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2))
    summary = {k: {m: v.get(m) for m in ("count_accuracy", "domain_set_accuracy", "domain_set_accuracy_qsef",
                                         "paths", "wall_s")}
               for k, v in out["results"].items()}
    print(json.dumps({"summary": summary, "fast_path_latency": out["fast_path_latency"]}, indent=2))
    RESULTS.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
