"""Compound-question decomposition accuracy, with the domains the router dispatches on (QSEF's scoring of
each sub-task, not the router LLM's hint), on two sets in one run:

* ``shipped`` — the 62 labelled compound queries of ``corpora`` (``compound_queries.jsonl``). These were
  read while tuning the clause splitter and the decomposer: numbers on them are *tuned-on*.
* ``heldout`` — compound messages built by :func:`router.compound_answers.build_compound_rows` from the
  graded answer sets (MMLU graded side, BIG-bench, bsdquiz; not the seed-history side), ``--n`` rows with
  a fixed ``--seed``. Their questions were not written by us. The seed-1 build's failures were read on
  2026-12-03 to fix the clause splitter (numbered items, option statements, "Two things: X? And Y?"), so seed 1
  is tuned-on now and the default is seed 2 (seeds 2 and 3 were measured before and after that change
  without being read first).

Each set is decomposed by the clause splitter (plus fast path), by the router's default configuration
(``router_llm``: the in-process router LLM ``settings.router_model`` on ``ModelPool(settings)``, asked
only where the fast path and the clear-split check do not answer) and by ``llm_every_split`` (the same
LLM asked for every query the splitter finds several parts in: the default before the clear-split
check), each row once; the sub-tasks are then routed by two scorers over the default fleet (a temporary registry):

* ``router`` — as ``Router.from_settings`` builds it: seed history on (``settings.router.seed_history``),
  no feedback store, no answer history (the held-out questions are in the measured answer matrix);
* ``plain`` — no history at all, as ``benchmarks/local_precision.py: decompose_runs`` scores.

Per row the error kind is recorded (:func:`router.evaluate.error_kind`): over-split, under-split, or the
right count with a wrong domain set.

    python benchmarks/compound_decomposition.py [--n 60] [--seed 2] [--no-llm] [--graph-questions on|off]

``--graph-questions`` sets ``settings.router.graph_questions`` (the ``router`` scorer's seed history with or
without the generated questions of ``qsef/data/graph_questions.jsonl``); default: the setting.

Writes ``benchmarks/results/compound_decomposition.json`` (``--out`` renames it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._common import save

COMPOUND_KEYS = ("n", "n_parts", "count_accuracy", "part_match_rate", "domain_accuracy", "domain_accuracy_alone",
                 "domain_set_accuracy", "paths")


class OnceDecomposer:
    """Decomposes each message once and replays it, so every scorer sees the same sub-tasks."""

    def __init__(self, decomposer: Any):
        self.inner = decomposer
        self.llm = decomposer.llm
        self._seen: dict[tuple[str, bool], Any] = {}

    def decompose(self, query: str, *, use_llm: bool = True) -> Any:
        key = (query, use_llm)
        if key not in self._seen:
            self._seen[key] = self.inner.decompose(query, use_llm=use_llm)
        return self._seen[key]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60, help="held-out compound rows")
    ap.add_argument("--seed", type=int, default=2, help="held-out build seed (1: tuned-on, see above)")
    ap.add_argument("--parts", choices=("2", "3", "mixed"), default="mixed")
    ap.add_argument("--no-llm", action="store_true", help="clause splitter only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="compound_decomposition")
    ap.add_argument("--graph-questions", choices=("on", "off"), default=None,
                    help="seed history with or without the generated questions (default: the setting)")
    args = ap.parse_args()

    from benchmarks.compound_answers import source_rows
    from core.domains import DOMAIN_DESCRIPTIONS, DOMAINS
    from core.settings import Settings
    from corpora.evalsets import data_file
    from experts.registry import ExpertRegistry
    from router.compound_answers import build_compound_rows, evaluate_compound
    from router.decompose import Decomposer
    from router.evaluate import error_kind, evaluate_decomposition, load_rows
    from router.llm import make_router_llm
    from router.scoring import RegistryScorer

    settings = Settings(torch_threads=args.threads, llm_threads=args.threads)
    if args.graph_questions is not None:
        settings = settings.model_copy(update={"router": settings.router.model_copy(
            update={"graph_questions": args.graph_questions == "on"})})
    cfg = settings.router
    shipped = load_rows(data_file("compound_queries.jsonl"))
    heldout = build_compound_rows(source_rows(settings, {}, "all"), n=args.n, parts=args.parts, seed=args.seed)
    registry = ExpertRegistry(Path(tempfile.mkdtemp()) / "experts.sqlite")
    registry.ensure_default_fleet(settings.expert_model)
    scorers = {"router": RegistryScorer(registry, settings=settings, seed_history=cfg.seed_history),
               "plain": RegistryScorer(registry, settings=settings)}
    for s in scorers.values():
        s.warm()

    def decomposer(llm: Any, clear_split: bool = cfg.clear_split) -> OnceDecomposer:
        return OnceDecomposer(Decomposer(llm, DOMAINS, descriptions=DOMAIN_DESCRIPTIONS, max_subtasks=cfg.max_subtasks,
                                         max_tokens=cfg.decompose_max_tokens, fast_path=cfg.fast_path,
                                         clear_split=clear_split, labels=cfg.decompose_labels))

    configs: dict[str, tuple[OnceDecomposer, bool]] = {"clause_splitter": (decomposer(make_router_llm("none")), False)}
    if not args.no_llm:
        from experts.backends import ModelPool
        from router.llm import TransformersRouterLLM

        llm = TransformersRouterLLM(settings.router_model, pool=ModelPool(settings))
        configs["router_llm"] = (decomposer(llm), True)
        # before the clear-split shortcut: the LLM decided every split the splitter found several parts in
        configs["llm_every_split"] = (decomposer(llm, clear_split=False), True)
        configs["llm_every_split"][0].inner.decompose("What is GDP? And how do I sort a list in Python?")  # warm

    results: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for cname, (dec, use_llm) in configs.items():
        for sname, scorer in scorers.items():
            key = f"{cname}/{sname}"
            t0 = time.perf_counter()
            res = evaluate_decomposition(shipped, dec, scorer=scorer, domain_source="qsef", use_llm=use_llm,
                                         keep_rows=True)
            res["errors"] = dict(Counter(error_kind(r) for r in res["rows"]))
            comp = evaluate_compound(heldout, decomposer=dec, scorer=scorer, use_llm=use_llm, keep_rows=True)
            comp_errors = Counter("ok" if r["count_ok"] and r["domain_set_ok"] else
                                  ("over_split" if len(r["subtasks"]) > len(r["parts"]) else
                                   "under_split" if len(r["subtasks"]) < len(r["parts"]) else "wrong_domain")
                                  for r in comp["rows"])
            comp["errors"] = dict(comp_errors)
            results[key] = {"shipped": res, "heldout": comp}
            summary[key] = {
                "shipped (tuned-on)": {"count_accuracy": res["count_accuracy"],
                                       "domain_set_accuracy": res["domain_set_accuracy"], "errors": res["errors"],
                                       "paths": res["paths"]},
                "heldout": {**{k: comp.get(k) for k in COMPOUND_KEYS}, "errors": comp["errors"]},
            }
            print(f"{key} [{time.perf_counter() - t0:.0f} s] shipped(tuned-on): count {res['count_accuracy']:.3f} "
                  f"domain-set {res['domain_set_accuracy']:.3f} {res['errors']} | heldout: count "
                  f"{comp['count_accuracy']:.3f} part-match {comp['part_match_rate']:.3f} part-domain "
                  f"{comp['domain_accuracy']:.3f} domain-set {comp['domain_set_accuracy']:.3f} {comp['errors']}",
                  flush=True)
    save(args.out, {
        "what": "compound decomposition: count and QSEF domain-set accuracy, clause splitter vs the router's "
                "default configuration (in-process router LLM + fast path), same rows, same run; 'shipped' = "
                "corpora compound_queries.jsonl (tuned-on), 'heldout' = build_compound_rows over the graded "
                "answer sets (not read while tuning)",
        "router_llm": None if args.no_llm else configs["router_llm"][0].llm.describe(),
        "heldout_build": {"n": args.n, "seed": args.seed, "parts": args.parts, "pool": "all"},
        "graph_questions": settings.router.graph_questions,
        "scorers": {"router": "default fleet, seed history on" + (" (with the generated graph questions)"
                                                                   if settings.router.graph_questions else "")
                              + ", no feedback, no answer history",
                    "plain": "default fleet, no history (as local_precision.decompose_runs)"},
        "summary": summary,
        "runs": results,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
