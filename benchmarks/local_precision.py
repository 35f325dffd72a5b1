"""In-process precision and engine for the router LLM and the hf experts, side by side: fp32 (transformers),
int8 on transformers (torch dynamic int8) and int8 on CTranslate2 (``settings.local_precision`` and
``settings.local_engine``).

One run, side by side on the same machine load, per model:

* **quality** — perplexity on held-out text (this repository's docs: fixed, never trained on) and, for
  the transformers engine, greedy-token agreement with fp32 on the same windows;
* **speed** — a 64-token greedy answer alone, and two answers decoded together by the
  :class:`experts.backends.ModelPool` micro-batcher (what one two-part query costs);
* **decomposition** (``--decompose``) — count and domain-set accuracy (QSEF's domains) on the shipped
  compound queries, in-process, for each precision, with and without domain labels in the LLM's output
  (:class:`router.decompose.Decomposer` ``labels``), and through the vLLM server when one is healthy on
  ``settings.llm_port``.

Saves ``benchmarks/results/local_precision.json``.

    .venv/bin/python benchmarks/local_precision.py [--models qwen-0.5b] [--decompose] [--threads 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's packages, not an installed copy
from _common import save

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
QUESTIONS = ("What are the common side effects of metformin?", "How do I read a CSV file in Python with pandas?")


def heldout_windows(tok, n_windows: int = 4, width: int = 512) -> list[list[int]]:
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    ids = tok(text)["input_ids"]
    return [ids[i * width : (i + 1) * width] for i in range(min(n_windows, len(ids) // width))]


def quality(pool, folder: Path, precision: str, windows: list[list[int]], ref_argmax=None):
    if pool.engine == "ctranslate2":  # log-probabilities from CTranslate2 (no logits: no greedy agreement)
        scored = pool.ct2_model(folder).score(windows)
        nll, count = -sum(sum(lp) for lp in scored), sum(len(lp) for lp in scored)
        return {"heldout_ppl": round(math.exp(nll / count), 3), "tokens": count}, None
    import torch

    _, model, _ = pool.get(folder, precision)
    nll, count, argmaxes = 0.0, 0, []
    with torch.inference_mode():
        for w in windows:
            ids = torch.tensor([w])
            logits = model(ids).logits[0, :-1]
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += len(w) - 1
            argmaxes.append(logits.argmax(-1))
    out = {"heldout_ppl": round(math.exp(nll / count), 3), "tokens": count}
    if ref_argmax is not None:
        same = sum(int((a == b).sum()) for a, b in zip(argmaxes, ref_argmax, strict=True))
        out["greedy_agreement_with_fp32"] = round(same / count, 4)
    return out, argmaxes


def speed(pool, folder: Path, precision: str, repeats: int = 3) -> dict:
    msgs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    if pool.engine != "ctranslate2":
        pool.get(folder, precision)
    saved, pool.precision = pool.precision, precision
    try:
        pool.generate(folder, msgs[1], max_tokens=8, temperature=0.0)  # warm-up, untimed
        single, pair = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            pool.generate(folder, msgs[0], max_tokens=64, temperature=0.0)
            single.append(time.perf_counter() - t)
            t = time.perf_counter()
            with cf.ThreadPoolExecutor(2) as ex:
                answers = list(ex.map(lambda m: pool.generate(folder, m, max_tokens=64, temperature=0.0), msgs))
            pair.append(time.perf_counter() - t)
    finally:
        pool.precision = saved
    return {"single_64_s": round(statistics.median(single), 2), "two_batched_64_s": round(statistics.median(pair), 2),
            "answers": [a[:160] for a in answers]}


def decompose_runs(settings, precisions: list[str], *, served: bool = True, labels: tuple[bool, ...] = (False, True),
                   ) -> dict:
    from core.domains import DOMAIN_DESCRIPTIONS, DOMAINS
    from corpora.evalsets import data_file
    from experts.backends import ModelPool
    from experts.registry import ExpertRegistry
    from router.decompose import Decomposer
    from router.evaluate import evaluate_decomposition, load_rows
    from router.llm import OpenAIRouterLLM, TransformersRouterLLM
    from router.scoring import RegistryScorer

    rows = load_rows(data_file("compound_queries.jsonl"))
    registry = ExpertRegistry(Path(tempfile.mkdtemp()) / "experts.sqlite")
    registry.ensure_default_fleet()
    scorer = RegistryScorer(registry, settings=settings)
    scorer.warm()
    out = {}
    llms = {}
    for precision in precisions:
        pool = ModelPool(settings.model_copy(update={"local_precision": precision}))
        llms[f"{pool.engine}-{precision}"] = TransformersRouterLLM(settings.router_model, pool=pool)
    server = OpenAIRouterLLM(f"http://{settings.llm_host}:{settings.llm_port}/v1", settings.router_model,
                             timeout=300, retries=0)
    try:
        if not served:
            raise RuntimeError("served configuration not asked for")
        import httpx

        if httpx.get(f"http://{settings.llm_host}:{settings.llm_port}/health", timeout=2).status_code == 200:
            llms["vllm-fp32"] = server
    except Exception as exc:
        print(f"the served configuration is not measured: {exc}", flush=True)
    for name, llm in llms.items():
        for label in labels:
            dec = Decomposer(llm, DOMAINS, descriptions=DOMAIN_DESCRIPTIONS, labels=label)
            dec.decompose("What is GDP? And how do I sort a list in Python?")  # load and warm
            res = evaluate_decomposition(rows, dec, scorer=scorer, domain_source="qsef", keep_rows=True)
            llm_rows = [r["latency_ms"] for r in res["rows"] if r["path"] != "fast_path"]
            res["llm_path_p50_ms"] = round(statistics.median(llm_rows), 1) if llm_rows else None
            key = f"{name}{'-labelled' if label else ''}"
            out[key] = res
            print(f"{key}: count {res['count_accuracy']:.3f} domain-set(QSEF) {res['domain_set_accuracy']:.3f} "
                  f"paths {res['paths']} LLM-path p50 {res['llm_path_p50_ms']} ms", flush=True)
    return out


ENGINES = {  # name: (settings.local_precision, settings.local_engine)
    "fp32": ("fp32", "transformers"),
    "int8": ("int8", "transformers"),
    "int8-ct2": ("int8", "ctranslate2"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["qwen-0.5b"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decompose", action="store_true")
    ap.add_argument("--no-models", action="store_true", help="decomposition only")
    ap.add_argument("--quick", action="store_true", help="decomposition: only int8 in process without labels "
                                                         "(merged into the last run's other configurations)")
    args = ap.parse_args()

    from core.settings import Settings
    from experts.backends import ModelPool

    settings = Settings(torch_threads=args.threads, llm_threads=args.threads)
    results: dict = {"threads": args.threads, "models": {}}
    for model in [] if args.no_models else args.models:
        row = {}
        ref = None
        for name, (precision, engine) in ENGINES.items():
            pool = ModelPool(settings.model_copy(update={"local_precision": precision, "local_engine": engine}))
            folder = pool.resolve(model)
            if ref is None:
                windows = heldout_windows(pool.get(folder, "fp32")[0])
            t = time.perf_counter()
            pool.ct2_model(folder) if pool.engine == "ctranslate2" else pool.get(folder, precision)
            load_s = time.perf_counter() - t
            q, argmaxes = quality(pool, folder, precision, windows, ref)
            ref = ref or argmaxes
            row[name] = {"engine": pool.engine, "load_s": round(load_s, 1), **q, **speed(pool, folder, precision)}
            print(model, name, {k: v for k, v in row[name].items() if k != "answers"}, flush=True)
            del pool
        for name in ENGINES:
            if name != "fp32":
                row[f"speedup_single_{name}"] = round(row["fp32"]["single_64_s"] / row[name]["single_64_s"], 2)
                row[f"speedup_two_{name}"] = round(row["fp32"]["two_batched_64_s"] / row[name]["two_batched_64_s"], 2)
        results["models"][model] = row
    if args.decompose:
        if args.quick:
            results["decomposition"] = decompose_runs(settings, ["int8"], served=False, labels=(False,))
        else:  # fp32 in process = the vLLM rows (fp32)
            results["decomposition"] = decompose_runs(settings, ["int8"])
    previous = RESULTS / "local_precision.json"
    if previous.is_file():  # a run of one part keeps the other part's last numbers (with their own date)
        old = json.loads(previous.read_text())
        if not args.decompose and "decomposition" in old:
            results["decomposition"] = old["decomposition"]
            results["decomposition_measured"] = old.get("decomposition_measured", old["machine"]["date"])
        elif args.quick and "decomposition" in old:  # the other configurations, from their own (dated) run
            results["decomposition"] = {**{f"{k} (earlier run)": v for k, v in old["decomposition"].items()
                                           if "earlier run" not in k}, **results["decomposition"]}
        if not results["models"] and old.get("models"):
            results["models"] = old["models"]
            results["models_measured"] = old.get("models_measured", old["machine"]["date"])
    save("local_precision", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
