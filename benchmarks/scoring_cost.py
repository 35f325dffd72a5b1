"""Scoring cost: one sub-task against N = 5, 100, 1000 experts, with and without the encoder forward.

Experts beyond the five default domain profiles are variants of them (jittered centroid, different
size and cost) that share their domain's BM25 index and graph anchors — many experts per domain, as in
a real fleet. Each measurement scores a *new* text (the encoder cache is bypassed), median over reps.

    .venv/bin/python benchmarks/scoring_cost.py [--reps 30] [--out benchmarks/results/scoring_cost.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from core.settings import Settings

SETTINGS = Settings()  # a benchmark is an entry point: settings are built here

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXTS = [
    "What is the first-line drug treatment for stage 1 hypertension in adults?",
    "Is a verbal agreement to sell land enforceable under the statute of frauds?",
    "How do I reverse a linked list in place in Python?",
    "Why does a central bank raise interest rates when inflation rises?",
    "Which river flows through Cairo?",
    "What are the symptoms of vitamin B12 deficiency?",
    "Can a landlord keep a security deposit for normal wear and tear?",
    "Explain the difference between a process and a thread.",
    "How is depreciation recorded in a company's balance sheet?",
    "Who built the pyramids of Giza and when?",
]


def fleet(base, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = list(base[:n])
    i = 0
    while len(out) < n:
        p = base[i % len(base)]
        c = p.centroid + rng.normal(scale=0.02, size=p.centroid.shape).astype(np.float32)
        out.append(p.with_centroid(c, name=f"{p.name}-{len(out)}", params=float(10 ** rng.uniform(8, 10)),
                                   cost=float(rng.uniform(0.5, 3))))
        i += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--ns", default="5,100,1000")
    ap.add_argument("--out", default="benchmarks/results/scoring_cost.json")
    args = ap.parse_args()

    from qsef.engine import QSEFEngine
    from qsef.profiles import default_profiles

    engine = QSEFEngine(prefilter_min=10**9, settings=SETTINGS)  # every expert scored
    base = default_profiles(SETTINGS)
    pf_engine = QSEFEngine(base, encoder=engine.encoder, kg=engine.kg, settings=SETTINGS)  # default: faiss pre-filter above 64
    enc = engine.encoder
    enc.encode(["warm-up"], use_cache=False)
    texts = [f"{t} (variant {r})" for r in range(args.reps) for t in TEXTS][: args.reps]
    for t in texts[:3]:  # warm the graphs, BM25 and regexes once
        engine.score([t], base)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    rows = []
    for n in [int(x) for x in args.ns.split(",")]:
        experts = fleet(base, n)
        score_only, total, prefilter_total = [], [], []
        # encoder-only is timed inside the same loop, side by side with the totals, so a busy spell on
        # the shared machine moves numerator and denominator alike
        enc_only = []
        for t in texts:
            enc_only.append(timed(lambda t=t: enc.encode([t], use_cache=False)))
            emb = enc.encode([t], use_cache=False)
            score_only.append(timed(lambda t=t, emb=emb, ex=experts: engine.score([t], ex, embeddings=emb)))

            def full(t=t, experts=experts):
                e = enc.encode([t], use_cache=False)
                engine.score([t], experts, embeddings=e)

            total.append(timed(full))

            def pre(t=t, experts=experts):
                e = enc.encode([t], use_cache=False)
                pf_engine.score([t], experts, embeddings=e)

            prefilter_total.append(timed(pre))
        med = statistics.median
        row = {"n_experts": n, "encoder_ms": 1e3 * med(enc_only), "score_only_ms": 1e3 * med(score_only),
               "total_ms": 1e3 * med(total), "total_over_encoder": med(total) / med(enc_only),
               "engine_default_total_ms": 1e3 * med(prefilter_total),
               "engine_default_over_encoder": med(prefilter_total) / med(enc_only),
               "engine_default": "faiss pre-filter to the 32 nearest centroids when N > 64"}
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    out = {
        "benchmark": "scoring_cost",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch_threads": __import__("torch").get_num_threads(),
                    "note": "2 CPU cores shared with other jobs"},
        "encoder": enc.name, "reps": args.reps,
        "flags": engine.score([texts[0]], base).flags[0],
        "rows": rows,
        "target": "total/encoder-only <= 1.2 at N=100",
        "target_met": next(r for r in rows if r["n_experts"] == 100)["total_over_encoder"] <= 1.2
        if any(r["n_experts"] == 100 for r in rows) else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
