"""KG-embedding quality: filtered MRR and Hits@10 on held-out triples, per domain graph and on Nations.

    python benchmarks/kg_embeddings.py [--model TransE] [--dim 32] [--epochs 40] [--max-triples 20000] [--ship]

Each domain graph is trained with :func:`kg.embeddings.train_embeddings` (graphs above ``--max-triples``
triples are subsampled to the region nearest the domain root; held-out triples are those whose
concepts keep a training triple). pykeen's bundled Nations dataset (its own split) is the sanity
reference. ``--ship`` also writes float16 embeddings to ``kg/data/embeddings/`` (what
``kg.load_embeddings`` falls back to). Results: ``benchmarks/results/kg_embeddings.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

from core.domains import DOMAINS
from core.settings import Settings

SETTINGS = Settings()  # a benchmark is an entry point: settings are built here

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "kg_embeddings.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--domains", nargs="*", default=["nations", *DOMAINS]
    )
    parser.add_argument("--model", default="TransE")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--max-triples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ship", action="store_true", help="write float16 embeddings to kg/data/embeddings/")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    from kg.embeddings import SHIPPED_DIR, train_embeddings

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    runs = {}
    for domain in args.domains:
        ship = args.ship and domain != "nations"
        out = SHIPPED_DIR / f"{domain}-{args.model}.safetensors" if ship else None
        r = train_embeddings(
            SETTINGS,
            domain,
            model=args.model,
            dim=args.dim,
            epochs=args.epochs,
            max_triples=args.max_triples,
            seed=args.seed,
            save=ship,
            out=out,
            half=True,
        )
        if "path" in r:
            r["path"] = str(Path(r["path"]).relative_to(ROOT))
        runs[domain] = r
        print(
            f"{domain:9s} MRR {r['mrr']:.4f}  Hits@10 {r['hits_at_10']:.4f}  ({r['triples']['used']}/{r['triples']['graph']} triples, "
            f"{r['entities']} entities, {r['train_seconds']}s)",
            flush=True,
        )
    doc = {
        "benchmark": "pykeen KG embeddings, filtered rank-based evaluation (both sides, realistic ranks)",
        "command": "python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {
            "model": args.model,
            "dim": args.dim,
            "epochs": args.epochs,
            "max_triples": args.max_triples,
            "seed": args.seed,
            "optimizer": "Adam lr 0.01",
            "batch_size": 512,
            "negative_sampler": "basic",
            "gc_freeze": True,
            "test_triples_evaluated_at_most": 2000,
        },
        "caveats": [
            "graphs above max_triples are subsampled to the triples among the concepts nearest the domain root (BFS); "
            "metrics describe that region, not the whole graph",
            "held-out triples are those whose two concepts and relation keep another training triple, so leaf facts of "
            "tree-shaped graphs (most ICD/HPO/licence facts) are never tested; Nations uses pykeen's own split",
        ],
        "total_seconds": round(time.perf_counter() - t0, 1),
        "runs": runs,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
