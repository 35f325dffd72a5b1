"""Label routing that transfers: the router's *default* configuration against the baselines a user would pick,
on every held-out labelled set we have, in one run, with paired McNemar tests.

``qsef`` here is exactly what ``qsef route`` scores with (and what ``qsef eval routing`` reports by default):
the five default profiles, the shipped calibration and the seed history — MMLU's ``history`` side (75% of the
mapped questions by hashed id) — as ``C_model``'s history. The feedback store is left out so the run is
reproducible. The baselines learn from the same labelled questions as the seed history (MMLU's history side,
plus the generated everyday questions of ``qsef/data/graph_questions.jsonl`` when ``--graph-questions on``,
``settings.router.graph_questions`` by default):

* ``centroid``: nearest mean MiniLM embedding per domain;
* ``knn``: similarity-weighted vote of the 10 nearest questions;
* ``zeroshot``: nearest one-line domain description (no training data);
* aurelio's ``semantic-router`` 1.1.1 (its own environment, ``benchmarks/peer_env.py``): an ``IndexedRouter``
  with one route per domain and every training question as an utterance, on the same MiniLM vectors — with
  its defaults (top_k 5, mean) and with sum-of-top-10 aggregation (its best on MMLU-style questions).

Sets (none of them is seed history or was used to fit the calibration):

* ``heldout`` (200, written while developing; its errors were inspected) and ``blind`` (300, written before
  tuning, never used to choose anything) — ``corpora/data/``;
* ``mmlu_graded``: MMLU's ``graded`` side (25%, never seed history);
* ``bigbench``: the questions of three BIG-bench multiple-choice tasks (code, medicine, general; another
  source and style);
* ``bsdquiz``: questions built from Debian's bsdgames quiz files (law, general; short and terse).

    .venv/bin/python benchmarks/routing_transfer.py [--graph-questions on|off] [--out routing_transfer]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import save
from core.settings import Settings

SETTINGS = Settings()  # a benchmark is an entry point: settings are built here
ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("centroid", "knn", "zeroshot")
SEMANTIC_ROUTER = "semantic-router==1.1.1"
SR_CONFIGS = {"semantic_router_default": {"top_k": 5, "aggregation": "mean"},
              "semantic_router_sum10": {"top_k": 10, "aggregation": "sum"}}


def semantic_router_predictions(engine, train: list[dict], sets: dict[str, list[dict]]) -> dict[str, dict]:
    """``{config: {set: predictions}}`` from semantic-router run in its own environment on our vectors."""
    import json
    import subprocess
    import tempfile

    from benchmarks.peer_env import peer_python

    python = peer_python(SETTINGS, "semantic-router", [SEMANTIC_ROUTER])
    texts = list(dict.fromkeys([r["text"] for r in train] + [r["text"] for rows in sets.values() for r in rows]))
    with tempfile.TemporaryDirectory() as tmp:
        npz, spec = Path(tmp) / "emb.npz", Path(tmp) / "spec.json"
        np.savez(npz, texts=np.array(texts), vectors=np.asarray(engine.encode(texts), dtype=np.float32))
        spec.write_text(json.dumps({"train": [[r["text"], r["domain"]] for r in train],
                                    "sets": {k: [r["text"] for r in rows] for k, rows in sets.items()},
                                    "configs": SR_CONFIGS}))
        run = subprocess.run([str(python), str(ROOT / "benchmarks/peers/semantic_router_run.py"), str(npz), str(spec)],
                             capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"semantic-router run failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def mcnemar(gold: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    """Exact two-sided McNemar test of a against b on the same rows (binomial on the discordant pairs)."""
    from scipy.stats import binomtest

    a_only = int(((a == gold) & (b != gold)).sum())
    b_only = int(((a != gold) & (b == gold)).sum())
    n = a_only + b_only
    return {"qsef_right_baseline_wrong": a_only, "baseline_right_qsef_wrong": b_only,
            "p_value": float(binomtest(a_only, n, 0.5).pvalue) if n else 1.0,
            "accuracy_difference": float((a == gold).mean() - (b == gold).mean())}


def labelled_sets(settings: Settings) -> dict[str, list[dict]]:
    """Every held-out labelled set: ``{"text", "domain"}`` rows."""
    from corpora import load_mmlu
    from corpora.mcsets import load_answer_set
    from qsef.eval.routing import load_rows

    sets = {"heldout": load_rows(ROOT / "corpora/data/routing_heldout.jsonl"),
            "blind": load_rows(ROOT / "corpora/data/routing_heldout_blind.jsonl"),
            "mmlu_graded": [{"text": r["text"], "domain": r["domain"]} for r in load_mmlu(settings, split="graded")]}
    for name in ("bigbench", "bsdquiz"):
        sets[name] = [{"text": r["question"], "domain": r["domain"]} for r in load_answer_set(settings, name)]
    return sets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="routing_transfer", help="result name under benchmarks/results/")
    ap.add_argument("--no-peers", action="store_true", help="skip semantic-router (no peer environment)")
    ap.add_argument("--graph-questions", choices=("on", "off"), default=None,
                    help="seed history (and every baseline's training rows) with or without the generated "
                         "questions (default: settings.router.graph_questions)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    graph_questions = SETTINGS.router.graph_questions if args.graph_questions is None else args.graph_questions == "on"
    from core.logs import setup_logging

    setup_logging("WARNING")  # library DEBUG lines (bm25s ...) stay off the console
    from qsef.engine import QSEFEngine
    from qsef.eval.routing import evaluate, report
    from qsef.history import seed_embeddings, seed_history, seed_rows

    engine = QSEFEngine(settings=SETTINGS)
    engine.history = seed_history(engine.experts, settings=SETTINGS, encoder=engine.encoder,
                                  graph_questions=graph_questions)
    train = seed_rows(SETTINGS, graph_questions=graph_questions)
    results: dict = {"what": "label routing: the router's default configuration vs baselines trained on the "
                             "same labelled questions (the seed history: MMLU history side"
                             + (" + generated graph questions" if graph_questions else "") + "), every set held out",
                     "graph_questions": graph_questions, "n_train": len(train), "sets": {}}
    sets = labelled_sets(SETTINGS)
    train_texts = [r["text"] for r in train]  # the seed history's questions: their vectors are on disk already
    engine.encoder.prime(train_texts, seed_embeddings(SETTINGS, encoder=engine.encoder,
                                                      graph_questions=graph_questions))
    peer = {} if args.no_peers else semantic_router_predictions(engine, train, sets)
    results["peers"] = {"semantic_router": {"package": SEMANTIC_ROUTER, "configs": SR_CONFIGS}} if peer else {}
    for name, rows in sets.items():
        gold = np.array([r["domain"] for r in rows])
        per: dict = {"n": len(rows), "support": {d: int((gold == d).sum()) for d in sorted(set(gold))}}
        preds = {}
        for method in ("qsef", *BASELINES):
            out = evaluate(rows, engine=engine, method=method, keep_predictions=True,
                           train_rows=train if method in ("centroid", "knn") else None)
            preds[method] = np.array(out.pop("predictions"))
        for cname, by_set in peer.items():
            preds[cname] = np.array([str(x) for x in by_set[name]])
        for method, pred in preds.items():
            per[method] = report(gold, pred)
            print(f"{name:<12} {method:<24} {per[method]['accuracy']:.3f}  (n={len(rows)})", flush=True)
        per["mcnemar"] = {b: mcnemar(gold, preds["qsef"], preds[b]) for b in preds if b != "qsef"}
        results["sets"][name] = per
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    path = save(args.out, results)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
