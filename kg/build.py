"""Rebuild the shipped default graphs in ``kg/data/`` from the installed sources.

Usage::

    QSEF_GNUCASH_DEB=/path/to/gnucash-docs_4.13-1_all.deb python -m kg.build            # all domains
    python -m kg.build --domains law code --out /tmp/graphs

Writes ``<domain>.kg.tsv.gz`` per domain and ``counts.json`` (the numbers quoted in ``README.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from core.domains import DOMAINS
from kg.model import KnowledgeGraph
from kg.storage import DATA_DIR, SUFFIX, atomic_write, write_graph


def graph_counts(graph: KnowledgeGraph) -> dict:
    """Node/edge counts by source and relation (as quoted in the README)."""
    return {
        "nodes": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "nodes_by_source": dict(sorted(Counter(n.source for n in graph.nodes()).items())),
        "edges_by_relation": dict(sorted(Counter(e.relation for e in graph.edges()).items())),
        "linkable_nodes": sum(1 for n in graph.nodes() if not n.attrs.get("nolink")),
    }


def main(argv: list[str] | None = None) -> int:
    from core.settings import Settings
    from kg.importers import build_domain

    parser = argparse.ArgumentParser(prog="python -m kg.build", description=__doc__.split("\n")[1])
    parser.add_argument("--domains", nargs="*", default=list(DOMAINS), choices=DOMAINS)
    parser.add_argument(
        "--out", type=Path, default=DATA_DIR, help="output folder (default: the package's kg/data)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    counts_path = args.out / "counts.json"
    counts = json.loads(counts_path.read_text()) if counts_path.is_file() else {}
    settings = Settings()  # an entry point: the one place this script reads the environment
    for domain in args.domains:
        t0 = time.perf_counter()
        graph = build_domain(settings, domain)
        path = write_graph(graph, args.out / f"{domain}{SUFFIX}", backup=False)
        counts[domain] = {
            **graph_counts(graph),
            "bytes": path.stat().st_size,
            "built": graph.meta.get("built"),
        }
        logging.info(
            "%s: %s in %.1fs -> %s (%d bytes)",
            domain,
            graph,
            time.perf_counter() - t0,
            path,
            path.stat().st_size,
        )
    atomic_write(
        counts_path, iter([json.dumps(counts, indent=2, sort_keys=True) + "\n"]), compress=False, backup=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
