"""Runs inside semantic-router's own environment (``benchmarks/peer_env.py``): route every test text with
aurelio's ``IndexedRouter`` — one route per domain, every training question an utterance — and print one JSON
object ``{config: {set: [predicted domain, ...]}}``.

The encoder is a ``DenseEncoder`` that returns the MiniLM vectors our benchmark computed (passed in an ``.npz``
of ``texts``/``vectors`` arrays), so both routers see the same embeddings and no model is loaded here.

    python semantic_router_run.py EMB.npz SPEC.json
    SPEC.json: {"train": [[text, domain], ...], "sets": {name: [text, ...]},
                "configs": {name: {"top_k": int, "aggregation": "mean"|"sum"|"max"}}}
"""

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from semantic_router import IndexedRouter, Route
from semantic_router.encoders import DenseEncoder


class LookupEncoder(DenseEncoder):
    """Precomputed vectors by text (every text the run asks for is in the table)."""

    table: dict[str, list[float]]

    def __call__(self, docs: list[Any]) -> list[list[float]]:
        return [self.table[d] for d in docs]


def main() -> int:
    emb, spec = np.load(sys.argv[1], allow_pickle=False), json.loads(Path(sys.argv[2]).read_text(encoding="utf-8"))
    table = {t: v.tolist() for t, v in zip(emb["texts"].tolist(), emb["vectors"], strict=True)}
    encoder = LookupEncoder(name="minilm-precomputed", table=table)
    by: dict = {}
    for text, domain in spec["train"]:
        by.setdefault(domain, []).append(text)
    routes = [Route(name=d, utterances=u) for d, u in sorted(by.items())]
    out: dict = {}
    for cname, cfg in spec["configs"].items():
        router = IndexedRouter(encoder=encoder, routes=routes, **cfg)
        out[cname] = {s: [router(t).name for t in texts] for s, texts in spec["sets"].items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
