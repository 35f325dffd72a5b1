"""The shipped LoRA experts served two ways, side by side in one run: in process (``peft`` backend, the
registry's ``<domain>-lora`` experts) and by one vLLM engine with every adapter as a served model name
(``qsef fleet up experts/data/fleets/lora.yaml``; vLLM's multi-LoRA).

For the same in-domain questions (``corpora/data/routing_heldout.jsonl``, the first ``--per-domain`` of each
domain, each asked of its own domain's adapter) and greedy ``--max-tokens`` answers it reports:

* agreement: the share of answers that are identical, and for the others the first differing token;
* in process: wall time, one question after another (the pool runs adapters one at a time);
* vLLM: wall time one after another, and with every question sent at once (mixed adapters in one batch);
* the server's start time (``fleet up`` until healthy).

    PYTHONPATH=. .venv/bin/python benchmarks/lora_serving.py [--per-domain 2] [--max-tokens 64] [--port 8033]

Saves ``benchmarks/results/lora_serving.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._common import save
from core.domains import DOMAINS

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "experts" / "data" / "fleets" / "lora.yaml"


def questions(per_domain: int) -> list[tuple[str, str]]:
    """(domain, question): the first ``per_domain`` held-out routing questions of every domain."""
    rows = [json.loads(line) for line in (ROOT / "corpora" / "data" / "routing_heldout.jsonl").read_text().splitlines()
            if line.strip()]
    out = []
    for d in DOMAINS:
        out += [(d, r["text"]) for r in rows if r["domain"] == d][:per_domain]
    return out


def first_difference(tok, a: str, b: str) -> int | None:
    """Index of the first differing token of two answers (``None``: identical)."""
    ta, tb = tok(a, add_special_tokens=False)["input_ids"], tok(b, add_special_tokens=False)["input_ids"]
    for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if x != y:
            return i
    return None if len(ta) == len(tb) else min(len(ta), len(tb))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-domain", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--port", type=int, default=8033)
    args = ap.parse_args()

    import yaml
    from transformers import AutoTokenizer

    from core.settings import Settings
    from experts.backends import ModelPool, make_backend
    from experts.registry import ExpertRegistry, shipped_adapters
    from router.fleet import Fleet, FleetManager

    settings = Settings()
    qs = questions(args.per_domain)
    messages = [[{"role": "user", "content": q}] for _, q in qs]
    local_specs = {s.domain: s for s in shipped_adapters()}

    # -- in process: the peft backend on one shared base (fp32 transformers: adapters never run on int8)
    pool = ModelPool(settings)
    local = {d: make_backend(local_specs[d], pool=pool) for d in DOMAINS}
    local[DOMAINS[0]].generate([{"role": "user", "content": "hi"}], max_tokens=2)  # load the base, not timed
    t0 = time.perf_counter()
    local_answers = [local[d].generate(m, max_tokens=args.max_tokens) for (d, _), m in zip(qs, messages, strict=True)]
    local_s = time.perf_counter() - t0
    pool.close()

    # -- vLLM: the shipped fleet file on its own port and a throwaway registry
    data = yaml.safe_load(FLEET.read_text())
    data["servers"][0]["port"] = args.port
    with tempfile.TemporaryDirectory() as tmp:
        manager = FleetManager(Fleet.model_validate(data), settings=settings,
                               registry=ExpertRegistry(Path(tmp) / "experts.sqlite"), source=str(FLEET))
        t0 = time.perf_counter()
        manager.up(timeout=1200)
        start_s = time.perf_counter() - t0
        try:
            served = {s.domain: make_backend(s) for s in manager.registry.list()}
            served[DOMAINS[0]].generate([{"role": "user", "content": "hi"}], max_tokens=2)  # warm, not timed
            t0 = time.perf_counter()
            vllm_answers = [served[d].generate(m, max_tokens=args.max_tokens) for (d, _), m in zip(qs, messages, strict=True)]
            vllm_seq_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with ThreadPoolExecutor(len(qs)) as ex:
                vllm_conc = list(ex.map(lambda dm: served[dm[0][0]].generate(dm[1], max_tokens=args.max_tokens),
                                        zip(qs, messages, strict=True)))
            vllm_conc_s = time.perf_counter() - t0
        finally:
            manager.down()

    tok = AutoTokenizer.from_pretrained(pool.resolve("qwen-0.5b"))
    n_tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in local_answers)
    diffs = [first_difference(tok, a, b) for a, b in zip(local_answers, vllm_answers, strict=True)]
    diffs_conc = [first_difference(tok, a, b) for a, b in zip(vllm_answers, vllm_conc, strict=True)]
    results = {
        "what": "shipped LoRA experts: in process (peft) vs one vLLM multi-LoRA engine, greedy, same questions",
        "questions": len(qs), "per_domain": args.per_domain, "max_tokens": args.max_tokens,
        "generated_tokens_in_process": n_tokens,
        "agreement": {"identical": sum(d is None for d in diffs) / len(diffs),
                      "first_difference_tokens": [d for d in diffs if d is not None],
                      "vllm_batched_vs_sequential_identical": sum(d is None for d in diffs_conc) / len(diffs_conc)},
        "in_process_s": round(local_s, 2),
        "vllm_sequential_s": round(vllm_seq_s, 2),
        "vllm_concurrent_s": round(vllm_conc_s, 2),
        "vllm_start_s": round(start_s, 1),
        "tokens_per_s": {"in_process": round(n_tokens / local_s, 1), "vllm_sequential": round(n_tokens / vllm_seq_s, 1),
                         "vllm_concurrent": round(n_tokens / vllm_conc_s, 1)},
        "samples": [{"domain": d, "question": q, "in_process": a, "vllm": b}
                    for (d, q), a, b in list(zip(qs, local_answers, vllm_answers, strict=True))[:5]],
    }
    save("lora_serving", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
