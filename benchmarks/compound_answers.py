"""Answer-graded compound questions end to end: 2-3 gold-answered questions of different domains in one
message, decomposed by the demo's router LLM and, side by side in the same run, by the deterministic clause
splitter; each part routed by QSEF (the domain it is dispatched on) and, with ``--answers``, answered by the
capability fleet's expert QSEF picks — against the same part asked alone.

    python benchmarks/compound_answers.py [--n 60] [--parts mixed] [--seed 0] [--llm auto] [--answers]

The questions are the graded sets of ``answer_quality.py`` — MMLU's graded side, BIG-bench, bsdquiz — all
held out from routing history. ``--pool cached`` (default) draws only questions every fleet expert has
already answered in the formats ``answer_quality.py`` used, so the asked-alone answers come from the cache
and only the compound sub-tasks that changed a question are scored.

``--llm auto`` is the demo's configuration (``settings.router_backend``; ``vllm``: the server on
``llm_host:llm_port`` while it is reachable, else the same model in process); ``transformers`` forces the
in-process model, ``vllm`` requires the server. Which one decomposed is recorded under ``router_llm``.
Writes ``benchmarks/results/compound_answers.json`` (``--out`` renames it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._common import save
from core.settings import Settings

HEADLINE = ("n", "n_parts", "count_accuracy", "part_match_rate", "domain_accuracy", "domain_accuracy_alone",
            "domain_set_accuracy", "domain_set_accuracy_hint", "answer_accuracy", "paths", "wall_s")


def _source(question_id: str) -> str:
    """``mmlu-4464`` -> ``mmlu``, ``bigbench:general_knowledge:29`` -> ``bigbench``."""
    return question_id.split(":")[0].split("-")[0]


def fleet_formats(settings: Settings, models: list[str]) -> dict:
    """The prompt format per expert that ``answer_quality.py``'s report uses (its dev-set choice per family)."""
    from benchmarks.answer_quality import _family_choice, formats_file
    from experts.answers import PromptFormat, model_family

    known = json.loads(formats_file(settings).read_text()) if formats_file(settings).is_file() else {"dev": {}}
    out = {}
    for m in models:
        members = [x for x in known["dev"] if model_family(x) == model_family(m)]
        name = _family_choice(known["dev"], members)
        if name is None:
            raise SystemExit(f"no prompt format for {m}: run `benchmarks/answer_quality.py --stage dev {m}` first")
        out[m] = PromptFormat.parse(name)
    return out


def source_rows(settings: Settings, formats: dict, pool: str) -> list[dict]:
    """The graded questions (MMLU graded side, BIG-bench, bsdquiz); ``pool="cached"``: only those every
    expert has scored in its format."""
    from benchmarks.answer_quality import PER_DOMAIN, graded_rows
    from corpora.mcsets import load_answer_set
    from router.answers import cached_rows

    rows = (graded_rows(settings) + load_answer_set(settings, "bigbench")
            + load_answer_set(settings, "bsdquiz", per_domain=PER_DOMAIN))
    if pool == "all":
        return rows
    out = cached_rows(rows, formats, settings=settings)
    if not out:
        raise SystemExit("no graded question is in every expert's answer cache: run answer_quality.py's score "
                         "stages first, or pass --pool all")
    return out


def answer_setup(settings: Settings, models: list[str]):
    from experts.registry import ExpertRegistry, capability_fleet
    from router.compound_answers import AnswerSetup

    registry = ExpertRegistry(settings.path("answers") / "fleet.sqlite")  # answer_quality.py's measured costs
    if not registry.names():
        for spec in capability_fleet():
            registry.add(spec)
    missing = [m for m in models if m not in registry.names()]
    if missing:
        raise SystemExit(f"experts {missing} are not in {settings.path('answers') / 'fleet.sqlite'}")
    return AnswerSetup(formats=fleet_formats(settings, models), registry=registry, settings=settings, progress=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="compound questions")
    ap.add_argument("--parts", choices=("2", "3", "mixed"), default="mixed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--llm", choices=("auto", "vllm", "transformers"), default="auto",
                    help="router LLM: auto = settings.router_backend (the demo's configuration)")
    ap.add_argument("--pool", choices=("cached", "all"), default="cached",
                    help="cached: questions every fleet expert has answered already (see the docstring)")
    ap.add_argument("--answers", action="store_true", help="answer every part with the capability fleet")
    ap.add_argument("--experts", nargs="+", default=["qwen-1.5b", "qwen-0.5b", "smollm2-135m"])
    ap.add_argument("--concurrency", type=int, help="messages decomposed at once (default 8 on a server, else 1)")
    ap.add_argument("--out", default="compound_answers", help="results/<OUT>.json")
    args = ap.parse_args()
    from core.logs import setup_logging

    setup_logging("INFO")
    from router.compound_answers import build_compound_rows, evaluate_compound
    from router.llm import ServedWithFallback
    from router.pipeline import Router

    base = Settings()
    formats = fleet_formats(base, args.experts)
    rows = build_compound_rows(source_rows(base, formats, args.pool), n=args.n, parts=args.parts, seed=args.seed)
    # the measured answer matrix holds these very questions: routing here learns from feedback and the seed
    # history only (as for any held-out question)
    changes: dict = {"router": base.router.model_copy(update={"answer_history": False})}
    if args.llm != "auto":
        changes["router_backend"] = args.llm
    settings = base.model_copy(update=changes)
    router = Router.from_settings(settings)
    llm = router.decomposer.llm
    served = (isinstance(llm, ServedWithFallback) and not llm.on_fallback) or llm.name == "openai"
    if args.llm == "vllm" and not served:
        print(f"no router LLM server is reachable at {llm.describe()}", file=sys.stderr)
        return 2
    setup = answer_setup(base, args.experts) if args.answers else None
    concurrency = args.concurrency or (8 if served else 1)
    t0 = time.perf_counter()
    try:
        router.scorer.warm()
        splitter = evaluate_compound(rows, decomposer=router.decomposer, scorer=router.scorer, use_llm=False,
                                     answers=setup, keep_rows=True)
        print(json.dumps({"clause_splitter": {k: splitter.get(k) for k in HEADLINE}}), flush=True)
        routed = evaluate_compound(rows, decomposer=router.decomposer, scorer=router.scorer, use_llm=True,
                                   concurrency=concurrency, answers=setup, keep_rows=True)
        described = llm.describe()  # after the run: a server that went away shows as the fallback
    finally:
        router.close()
    save(args.out, {
        "what": "answer-graded compound questions: decomposition (router LLM vs the clause splitter, same rows, "
                "same run), QSEF's dispatched domain per part and per set, "
                + ("answers by the QSEF-chosen capability-fleet expert vs the same part asked alone (cross-fitted)"
                   if args.answers else "no answers (decomposition and routing only)"),
        "n": len(rows), "parts": args.parts, "seed": args.seed, "pool": args.pool,
        "parts_by_source": dict(sorted(Counter(_source(p.id) for r in rows for p in r.parts).items())),
        "parts_by_domain": dict(Counter(p.domain for r in rows for p in r.parts)),
        "router_llm": {"requested": args.llm, "used": described, "served": served, "concurrency": concurrency},
        "router_experts": [e.name for e in router.registry.list(enabled_only=True)],
        "answer_fleet": {"experts": args.experts, "formats": {m: f.name for m, f in formats.items()}}
        if args.answers else None,
        "summary": {"router_llm": {k: routed.get(k) for k in HEADLINE},
                    "clause_splitter": {k: splitter.get(k) for k in HEADLINE}},
        "router_llm_run": routed,
        "clause_splitter_run": splitter,
        "total_s": round(time.perf_counter() - t0, 1),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
