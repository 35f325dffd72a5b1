"""Linking throughput and distance latency on the largest shipped graph (and the medicine graph).

    python benchmarks/kg_signals.py [--graphs general medicine] [--passes 3]

Texts: the 250 MMLU questions of the linking-precision sample (``kg_linking_sample.json``).
Measured single-threaded, wall clock, after one warm-up pass:

* one-off costs: graph load, linker build, index build (adjacency), PageRank + anchors;
* ``kg.link`` throughput in texts/s (and tokens/s);
* latency of ``path_distance(linked concepts, 20 anchors, cap=6)`` per text, of ``path_distance`` and
  ``lca_distance`` between random concept pairs, of ``embedding_distance`` (when embeddings exist),
  of ``concept_density`` and of ``coverage`` (linked against all five graphs): p50 / p99 / mean in ms.

Results go to ``benchmarks/results/kg_signals.json`` with the command, machine, load and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

from core.settings import Settings

SETTINGS = Settings()  # a benchmark is an entry point: settings are built here

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "benchmarks" / "results" / "kg_linking_sample.json"
RESULT = ROOT / "benchmarks" / "results" / "kg_signals.json"


def _ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "mean_ms": round(float(a.mean()), 4),
        "n": len(samples),
    }


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def bench_graph(domain: str, texts: list[str], passes: int, seed: int) -> dict:
    import kg
    from kg.linking import get_linker
    from kg.storage import graph_path, read_graph
    from kg.text import tokenize

    graph, t_load = _timed(read_graph, graph_path(SETTINGS, domain), domain=domain)
    linker, t_linker = _timed(get_linker, graph)  # the cached linker kg.link and concept_density use
    graph_index, t_index = _timed(lambda: graph.index)
    _, t_depth = _timed(lambda: graph_index.depth)
    anchors, t_anchors = _timed(graph.anchors, 20)
    # throughput (warm-up pass first)
    for t in texts:
        linker.link(t)
    n_tokens = sum(len(tokenize(t)) for t in texts)
    t0 = time.perf_counter()
    mentions = []
    for _ in range(passes):
        mentions = [linker.link(t) for t in texts]
    dt_link = time.perf_counter() - t0
    ids = [[m.node_id for m in ms] for ms in mentions]
    # path distance text concepts -> anchors
    lat_anchor = []
    for s in ids:
        t0 = time.perf_counter()
        graph.path_distance(s, anchors, cap=6)
        lat_anchor.append(time.perf_counter() - t0)
    # random concept pairs
    rng = random.Random(seed)
    linked = sorted({i for s in ids for i in s})
    all_ids = graph_index.ids
    pairs = [(rng.choice(all_ids), rng.choice(all_ids)) for _ in range(1000)]
    lat_pair = []
    found = 0
    for a, b in pairs:
        t0 = time.perf_counter()
        d = graph.path_distance([a], [b], cap=6)
        lat_pair.append(time.perf_counter() - t0)
        found += d < 1.0
    lca_pairs = [(rng.choice(linked), rng.choice(linked)) for _ in range(1000)] if linked else []
    if lca_pairs:
        graph.lca_distance(*lca_pairs[0])  # depth table: a one-off cost, timed under index_build below
    lat_lca = []
    for a, b in lca_pairs:
        t0 = time.perf_counter()
        graph.lca_distance(a, b)
        lat_lca.append(time.perf_counter() - t0)
    lat_density = []
    for t in texts:
        t0 = time.perf_counter()
        kg.concept_density(t, graph)
        lat_density.append(time.perf_counter() - t0)
    out = {
        "graph": {
            "domain": domain,
            "nodes": graph.number_of_nodes(),
            "edges": graph.number_of_edges(),
            "linker_patterns": linker.n_patterns,
        },
        "one_off_seconds": {
            "load": round(t_load, 2),
            "linker_build": round(t_linker, 2),
            "index_build": round(t_index, 2),
            "isa_depths": round(t_depth, 2),
            "pagerank_and_anchors": round(t_anchors, 2),
        },
        "linking": {
            "texts": len(texts) * passes,
            "seconds": round(dt_link, 3),
            "texts_per_s": round(len(texts) * passes / dt_link, 1),
            "tokens_per_s": round(n_tokens * passes / dt_link, 0),
            "mentions_per_text": round(sum(map(len, ids)) / len(ids), 2),
        },
        "path_distance_text_to_20_anchors": _ms(lat_anchor),
        "path_distance_random_pairs_cap6": {
            **_ms(lat_pair),
            "share_within_cap": round(found / len(pairs), 3),
        },
        "lca_distance_random_linked_pairs": _ms(lat_lca) if lat_lca else None,
        "concept_density_per_text": _ms(lat_density),
    }
    try:
        emb = kg.load_embeddings(SETTINGS, domain)
        lat_emb = []
        for s in ids:
            t0 = time.perf_counter()
            kg.embedding_distance(s, anchors, emb)
            lat_emb.append(time.perf_counter() - t0)
        out["embedding_distance_text_to_anchors"] = {
            **_ms(lat_emb),
            "embeddings": str(emb.path.relative_to(ROOT)) if ROOT in emb.path.parents else str(emb.path),
            "anchors_embedded": sum(a in emb for a in anchors),
        }
    except FileNotFoundError as exc:
        out["embedding_distance_text_to_anchors"] = {"skipped": str(exc)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graphs", nargs="*", default=["general", "medicine"])
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    texts = [t["text"] for t in json.loads(SAMPLE.read_text())["texts"]]
    load_before = os.getloadavg()
    results = {}
    for domain in args.graphs:
        results[domain] = bench_graph(domain, texts, args.passes, args.seed)
        print(json.dumps({domain: results[domain]}, indent=1))
    import kg

    lat_cov = []
    graphs = kg.load_all(SETTINGS)
    kg.coverage(texts[0], graphs["law"], graphs)  # builds the union linker once
    for t in texts:
        t0 = time.perf_counter()
        kg.coverage(t, graphs["law"], graphs)
        lat_cov.append(time.perf_counter() - t0)
    doc = {
        "benchmark": "kg linking throughput and distance latency",
        "command": "python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "note": "shared 2-core machine; other jobs were running, so wall-clock numbers are pessimistic",
        },
        "texts": f"{len(texts)} MMLU questions from {SAMPLE.relative_to(ROOT)}",
        "graphs": results,
        "coverage_per_text_union_of_5_graphs": _ms(lat_cov),
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
