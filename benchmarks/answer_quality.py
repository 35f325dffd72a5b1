"""Answer quality × cost of a fleet of experts that really differ, and of the routers between them.

    python benchmarks/answer_quality.py [--json]              # the report (scores come from the cache)
    python benchmarks/answer_quality.py --cost recorded       # the report without loading any model
    python benchmarks/answer_quality.py --stage dev MODEL...   # score the dev set in all four formats
    python benchmarks/answer_quality.py --stage score MODEL... # score the graded set in the chosen format

The scoring stages exist so the long CPU work can run in the background, one model per process, ahead
of the report; the report re-reads everything from the answer cache (nothing is scored twice).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._common import save
from core.settings import Settings

EXPERTS = ("qwen-1.5b", "qwen-0.5b", "smollm2-135m")
PER_DOMAIN = 80     # graded MMLU questions per domain (the graded side of the split)
DEV_PER_DOMAIN = 16  # dev questions per domain for the format choice (history side: never graded)


def graded_rows(settings: Settings) -> list[dict]:
    from corpora import mmlu_answer_rows

    rows = mmlu_answer_rows(settings, split="graded", per_domain=PER_DOMAIN)
    # round-robin over domains, so a run cut short still has every domain in equal measure
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["domain"], []).append(r)
    return [r for group in zip(*by.values(), strict=False) for r in group]


def set_rows(settings: Settings, name: str) -> list[dict]:
    """The rows of one question set the score stage can work through (``dev``: the format-choice set)."""
    from corpora.mcsets import load_answer_set

    if name == "mmlu":
        return graded_rows(settings)
    if name == "dev":
        return dev_rows(settings)
    return load_answer_set(settings, name, per_domain=PER_DOMAIN if name == "bsdquiz" else None)


def dev_rows(settings: Settings) -> list[dict]:
    from corpora import mmlu_answer_rows

    return mmlu_answer_rows(settings, split="history", per_domain=DEV_PER_DOMAIN)


def formats_file(settings: Settings) -> Path:
    return settings.path("cache", "answers") / "formats.json"


def stage_dev(settings: Settings, models: list[str], formats: str | None = None) -> None:
    from experts.answers import PromptFormat
    from router.answers import choose_formats

    fmts = [PromptFormat.parse(f) for f in formats.split(",")] if formats else None
    out = choose_formats(dev_rows(settings), models, settings=settings, formats=fmts)
    path = formats_file(settings)
    known = json.loads(path.read_text()) if path.is_file() else {"family": {}, "dev": {}}
    known["family"].update(out["family"])
    for m, accs in out["dev"].items():
        known["dev"].setdefault(m, {}).update(accs)
    for fam in out["family"]:  # re-decide over every format scored so far, not only this call's
        known["family"][fam] = _family_choice(known["dev"], [m for m in known["dev"] if m.split("-", 1)[0] == fam])
    known["n_dev"] = out["n_dev"]
    path.write_text(json.dumps(known, indent=1))
    print(json.dumps(known))


def chosen_formats(settings: Settings, models: list[str]) -> dict:
    from experts.answers import PromptFormat, model_family

    fam = json.loads(formats_file(settings).read_text())["family"]
    return {m: PromptFormat.parse(fam[model_family(m)]) for m in models}


def stage_score(settings: Settings, models: list[str], rows: list[dict], fmt: str | None = None) -> None:
    from experts.answers import PromptFormat
    from router.answers import answer_matrix

    formats = {m: PromptFormat.parse(fmt) for m in models} if fmt else chosen_formats(settings, models)
    m = answer_matrix(rows, formats, settings=settings, progress=True)
    print(json.dumps({"accuracy": m.accuracy(), "errors": m.errors, "n": len(rows)}))


COST_PROMPTS = ("Explain briefly what a hash table is.", "What are the symptoms of anaemia?")


def measure_costs(settings: Settings, models: list[str], *, new_tokens: int = 24) -> dict[str, float]:
    """Seconds per 100 generated tokens, every model on the same prompts, interleaved round by round so
    that a change in the machine's load hits all of them alike."""
    from experts.answers import AnswerScorer

    scorers = {m: AnswerScorer(m, settings=settings) for m in models}
    for sc in scorers.values():
        sc.load()
        sc.seconds_per_100_tokens(["Hi."], new_tokens=2)  # warm-up
    per: dict[str, list[float]] = {m: [] for m in models}
    for p in COST_PROMPTS:
        for m, sc in scorers.items():
            per[m].append(sc.seconds_per_100_tokens([p], new_tokens=new_tokens))
    for sc in scorers.values():
        sc.unload()
    return {m: round(sum(v) / len(v), 3) for m, v in per.items()}


COSTS_FILE = Path(__file__).resolve().parent / "results" / "answer_quality.json"  # the committed report


def recorded_costs(registry, models: list[str], *, fallback: Path | None = COSTS_FILE
                   ) -> tuple[dict[str, float], dict[str, str]]:
    """The measured costs an earlier ``--cost measured`` report recorded in the fleet registry (so a report
    run can keep them without loading a model); for a model the registry has no measured cost for (a fresh
    machine), the costs the committed report ``fallback`` stored, if they are seconds per 100 tokens.

    Returns:
        ``(model -> cost, model -> where that cost came from)``.

    Raises:
        SystemExit: a model has a measured cost in neither place.
    """
    known = {s.name: s for s in registry.list()}
    costs, source = {}, {}
    for m in models:
        if m in known and known[m].profile.get("cost_unit") == "s_per_100_tokens":
            costs[m], source[m] = float(known[m].cost), "fleet registry"
    missing = [m for m in models if m not in costs]
    if missing and fallback is not None and fallback.is_file():
        saved = json.loads(fallback.read_text())
        block = saved.get("costs", {})
        # reports before cost_unit existed name the unit in words only
        unit = block.get("cost_unit") or ("s_per_100_tokens" if str(block.get("unit", "")).startswith(
            "seconds per 100 generated tokens") else None)
        if unit == "s_per_100_tokens":
            what = saved.get("machine", {})
            where = f"{fallback.name} (committed report of {what.get('date', '?')} at {what.get('git_commit', '?')})"
            for m in missing:
                if m in block.get("values", {}):
                    costs[m], source[m] = float(block["values"][m]), where
    missing = [m for m in models if m not in costs]
    if missing:
        raise SystemExit(f"no measured cost recorded for {', '.join(missing)} (neither in the fleet registry nor "
                         f"in {fallback}); run the report with --cost measured")
    for m in models:
        if source[m] != "fleet registry":
            print(f"cost of {m}: {costs[m]} s per 100 tokens from {source[m]} (none in the fleet registry)",
                  file=sys.stderr)
    return costs, source


def _family_choice(dev: dict[str, dict[str, float]], members: list[str]) -> str | None:
    import numpy as np

    from experts.answers import all_formats

    scored = {f for m in members for f in dev.get(m, {})}
    fmts = [f.name for f in all_formats() if f.name in scored]  # ties: the earlier format, as choose_formats
    if not fmts:
        return None
    return max(fmts, key=lambda f: np.mean([dev[m][f] for m in members if f in dev.get(m, {})]))


def pareto_png(res: dict, path: Path, title: str, *, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name, sweep in res["sweeps"].items():
        pts = sorted({(o["mean_cost"], o["accuracy"]) for o in sweep})
        ax.plot([c for c, _ in pts], [a for _, a in pts], ".-", alpha=0.7, label=name)
    for name, o in res["experts"].items():
        ax.scatter([o["mean_cost"]], [o["accuracy"]], marker="s", s=50, zorder=3)
        ax.annotate(name, (o["mean_cost"], o["accuracy"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    for name, o, m in (("random", res["random"], "x"), ("oracle", res["oracle"], "*"),
                       ("routed (argmax TE)", res["routed"], "D")):
        ax.scatter([o["mean_cost"]], [o["accuracy"]], marker=m, s=70, zorder=4, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(settings: Settings, models: list[str], *, cost_mode: str = "measured") -> dict:
    """Every table of the answer-quality benchmark, from the answer cache (no question is scored here)."""
    from corpora.mcsets import load_answer_set
    from experts.answers import PromptFormat, model_family
    from experts.registry import ExpertRegistry, capability_fleet
    from qsef.history import AnswerHistory, answer_history_path
    from router.answers import evaluate_answers

    known = json.loads(formats_file(settings).read_text()) if formats_file(settings).is_file() else {"dev": {}}
    fams: dict[str, list[str]] = {}
    for m in known["dev"]:
        fams.setdefault(model_family(m), []).append(m)
    choice = {f: _family_choice(known["dev"], ms) for f, ms in fams.items()}
    undecided = [m for m in models if choice.get(model_family(m)) is None]
    if undecided:
        raise SystemExit(f"no dev-set format choice for {', '.join(undecided)}: run "
                         f"`benchmarks/answer_quality.py --stage dev {' '.join(undecided)}` first")
    used = {m: PromptFormat.parse(choice[model_family(m)]) for m in models}  # every family: its dev choice
    registry = ExpertRegistry(settings.path("answers") / "fleet.sqlite")
    cost_source: dict[str, str] | None = None
    if cost_mode == "recorded":
        costs, cost_source = recorded_costs(registry, models)
    elif cost_mode == "measured":
        costs = measure_costs(settings, models)
        cost_source = {m: "measured in this run" for m in models}
    else:
        costs = None
    for spec in capability_fleet(costs, cost_unit="s_per_100_tokens" if costs else "params_b"):
        registry.add(spec, replace=True)
    out: dict = {
        "what": "answer quality x cost of the capability fleet; every router is cross-fitted (5 folds): a "
                "question is routed with the answers of the other folds as history, never its own",
        "formats": {"dev_accuracy": known["dev"], "n_dev": known.get("n_dev"), "family_choice": choice,
                    "used": {m: f.name for m, f in used.items()}},
        "costs": {"unit": {"measured": "seconds per 100 generated tokens (greedy, 24 tokens x 2 prompts, interleaved, "
                                       "this machine, this run)",
                           "recorded": "seconds per 100 generated tokens, as the last measured run recorded them in "
                                       "the fleet registry, or failing that in the committed answer_quality.json "
                                       "(see cost_source; not re-measured in this run)",
                           "params": "parameters in billions"}[cost_mode],
                  "cost_unit": "s_per_100_tokens" if costs else "params_b",
                  "cost_source": cost_source or {m: "parameter count" for m in models},
                  "values": {s.name: s.cost for s in registry.list()}},
        "qsef_configs": "qsef = the engine's label calibration (shipped qsef/data/calibration.json); qsef_refit = "
                        "weights refitted on the training folds' answer outcomes only (qsef.calibration."
                        "fit_outcome_logit), same components and C_model history; both cross-fitted",
    }
    quiz = load_answer_set(settings, "bsdquiz", per_domain=PER_DOMAIN)
    bigbench = load_answer_set(settings, "bigbench")
    sets = {
        # the headline: every question all three experts have answered, from all three sources
        "fleet3_all": (graded_rows(settings) + bigbench + quiz, models),
        "fleet3_mmlu": (graded_rows(settings), models),
        "fleet2_mmlu": (graded_rows(settings), [m for m in models if m != "qwen-1.5b"]),
        "fleet3_bigbench": (bigbench, models),
        "fleet2_bigbench": (bigbench, [m for m in models if m != "qwen-1.5b"]),
        "fleet3_bsdquiz": (quiz, models),
        "fleet2_bsdquiz": (quiz, [m for m in models if m != "qwen-1.5b"]),
    }
    for name, (rows, fleet) in sets.items():
        res = evaluate_answers(rows, {m: used[m] for m in fleet}, settings=settings, registry=registry,
                               cached_only=True)
        matrix = res.pop("_matrix", None)
        res.pop("_emb", None)
        if name == "fleet3_all" and matrix is not None and matrix.experts:
            from qsef.encoder import get_encoder

            emb = get_encoder(settings).encode([q.question for q in matrix.questions])
            res["answer_history"] = str(AnswerHistory(emb, matrix.correct, matrix.experts).save(
                answer_history_path(settings)))
        if "sweeps" in res:
            png = Path(__file__).resolve().parent / "reports" / f"answer_quality_{name}.png"
            pareto_png(res, png, f"{name}: n={res['n']} (cross-fitted routers)",
                       xlabel="mean cost (" + ("s per 100 generated tokens, this machine" if costs
                                               else "parameters, billions") + ")")
            res["pareto_png"] = str(png.relative_to(Path(__file__).resolve().parents[1]))
        out[name] = res
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("report", "dev", "score"), default="report")
    ap.add_argument("models", nargs="*", default=list(EXPERTS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cost", choices=("measured", "recorded", "params"), default="measured",
                    help="expert cost: seconds per 100 generated tokens measured now (loads every model), as "
                         "recorded by the last measured run (no model is loaded), or parameters (billions)")
    ap.add_argument("--dev-formats", help="dev stage: only these formats, comma-separated")
    ap.add_argument("--format", help="score stage: this format instead of the dev-set choice (e.g. letter-raw)")
    ap.add_argument("--set", default="mmlu", choices=("mmlu", "bigbench", "bsdquiz", "dev"),
                    help="score stage: which question set (mmlu = the graded MMLU side, round-robin by domain)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from core.logs import setup_logging

    setup_logging("INFO")
    settings = Settings()
    if args.stage == "dev":
        stage_dev(settings, args.models, args.dev_formats)
        return 0
    if args.stage == "score":
        stage_score(settings, args.models, set_rows(settings, args.set), args.format)
        return 0
    results = report(settings, list(args.models), cost_mode=args.cost)
    if args.json:
        keys = ("n", "routed", "experts", "oracle", "apgr", "per_domain")
        print(json.dumps({k: results["fleet3_all"].get(k) for k in keys}))
    save("answer_quality", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
