"""Routing accuracy: QSEF vs baselines on MMLU (5-fold CV) and on two held-out non-MMLU sets, plus ablations.

Everything is measured in one run, on the same folds and the same cached MiniLM embeddings:

* MMLU mapped to our five domains (SPEC §8), stratified 5-fold CV: qsef, centroid, knn, zeroshot, random
  (and llm on a seeded subsample when ``--llm N`` is given);
* two held-out sets from other sources and styles, every method trained on all of MMLU:
  ``routing_heldout.jsonl`` (200 rows, written while developing; its errors were inspected) and
  ``routing_heldout_blind.jsonl`` (300 rows in six styles, written before any tuning by someone who
  never ran a router on it, and never used to choose anything);
* ablations: qsef with each component removed or swapped for a variant, on every set.

    .venv/bin/python benchmarks/routing_mmlu.py [--llm 200] [--out benchmarks/results/routing_mmlu.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.domains import DOMAINS
from core.settings import Settings

SETTINGS = Settings()  # a benchmark is an entry point: settings are built here

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("routing_bench")


def _static_cached(ds, engine, experts, name: str):
    """attach_static with an on-disk cache keyed by the texts, the profiles and the graphs available."""
    from qsef.encoder import texts_digest
    from qsef.eval.routing import STATIC, attach_static, engine_component

    variant = engine_component(engine, "d_kg").variant
    sparsity = engine_component(engine, "c_sparsity")
    key = texts_digest(ds.texts + [p.name + str(p.meta.get("corpus_sha256")) + str(p.kg_domain) + ",".join(p.kg_anchors)
                                   for p in experts]
                       + [f"d_kg={variant}", f"c_sparsity={sparsity.lexical},{sparsity.lexical_weight}"])[:16]
    folder = SETTINGS.path("cache", "routing_features")
    f = folder / f"{name}-{key}.npz"
    if f.is_file():
        data = np.load(f, allow_pickle=False)
        ds.static = {k: data[k] for k in STATIC}
        ds.flags = json.loads(str(data["flags"]))
        return ds
    t0 = time.time()
    attach_static(ds, engine, experts)
    np.savez(f, flags=np.array(json.dumps(ds.flags)), **ds.static)
    log.info("static features", extra={"set": name, "n": len(ds.texts), "seconds": round(time.time() - t0, 1)})
    return ds


def mcnemar(gold: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    """Exact two-sided McNemar test of methods a and b on the same rows (binomial on the discordant pairs)."""
    from scipy.stats import binomtest

    a_only = int(((a == gold) & (b != gold)).sum())
    b_only = int(((a != gold) & (b == gold)).sum())
    n = a_only + b_only
    p = binomtest(a_only, n, 0.5).pvalue if n else 1.0
    return {"a_right_b_wrong": a_only, "b_right_a_wrong": b_only, "p_value": float(p),
            "accuracy_difference": float((a == gold).mean() - (b == gold).mean())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/routing_mmlu.json")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--llm", type=int, default=0, help="measure llm routing on a seeded subsample of N rows")
    ap.add_argument("--llm-model", default="qwen-0.5b")
    ap.add_argument("--heldout", default="corpora/data/routing_heldout.jsonl",
                    help="held-out set used while developing (its errors were looked at)")
    ap.add_argument("--blind", default="corpora/data/routing_heldout_blind.jsonl",
                    help="held-out set written before any tuning and never used to tune")
    ap.add_argument("--skip-ablations", action="store_true")
    ap.add_argument("--write-calibration", action="store_true", help="refit qsef/data/calibration.json on all MMLU")
    ap.add_argument("--calibration-only", action="store_true", help="only refit the calibration (with --write-calibration)")
    args = ap.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    t_start = time.time()

    from corpora import load_mmlu
    from qsef.encoder import encode_cached
    from qsef.engine import QSEFEngine
    from qsef.eval.routing import (
        LabelledSet,
        confusion_png,
        cross_validate_method,
        load_rows,
        make_method,
        report,
    )
    from qsef.profiles import default_profiles

    engine = QSEFEngine(settings=SETTINGS)
    experts = default_profiles(SETTINGS)
    engine.experts = experts
    enc = engine.encoder

    mmlu = [{"text": r["text"], "domain": r["domain"]} for r in load_mmlu(SETTINGS)]
    mm = LabelledSet([r["text"] for r in mmlu], encode_cached([r["text"] for r in mmlu], encoder=enc, name="mmlu",
                                                            cache_dir=SETTINGS.path("cache", "embeddings")),
                     np.array([r["domain"] for r in mmlu]))
    _static_cached(mm, engine, experts, "mmlu")
    tests: dict[str, LabelledSet] = {}  # every held-out set: fitted on all MMLU, then predicted
    for set_name, path in (("heldout", args.heldout), ("blind", args.blind)):
        if Path(path).is_file():
            rows = load_rows(path)
            texts = [r["text"] for r in rows]
            tests[set_name] = LabelledSet(texts, encode_cached(texts, encoder=enc, name=set_name,
                                                               cache_dir=SETTINGS.path("cache", "embeddings")),
                                          np.array([r["domain"] for r in rows]))
            _static_cached(tests[set_name], engine, experts, set_name)
    log.info("data ready", extra={"mmlu": len(mm.texts), **{k: len(v.texts) for k, v in tests.items()},
                                  "s": round(time.time() - t_start)})

    results: dict = {"mmlu_cv": {}, "ablation_mmlu_cv": {}}
    for set_name in tests:
        results[set_name], results[f"ablation_{set_name}"] = {}, {}
    preds = {}
    methods = ["qsef", "centroid", "knn", "zeroshot", "random"]

    def mk(name, **kw):
        return lambda: make_method(name, engine=engine, experts=experts, **kw)

    for name in [] if args.calibration_only else methods:
        t0 = time.time()
        out, pred = cross_validate_method(mk(name), mm, k=args.folds)
        out["seconds"] = round(time.time() - t0, 1)
        results["mmlu_cv"][name] = out
        preds[name] = pred
        log.info("mmlu cv", extra={"method": name, "acc": round(out["accuracy"], 4)})
        if tests:
            m = mk(name)()
            m.fit(mm)
            if name == "qsef":
                results["qsef_fit_on_all_mmlu"] = m.fit_info
            for set_name, ds in tests.items():
                p = m.predict(ds)
                results[set_name][name] = report(ds.labels, p)
                preds[f"{name}_{set_name}"] = p
                log.info(set_name, extra={"method": name, "acc": round(results[set_name][name]["accuracy"], 4)})

    if args.calibration_only:
        args.skip_ablations, args.llm = True, 0
    # qsef with corpus-only profiles and no history: only its 3-4 weights are fitted on MMLU
    corpus_only = {"blend": 0.0, "use_history": False}
    out, _ = cross_validate_method(mk("qsef", **corpus_only), mm, k=args.folds)
    out["note"] = "corpus profiles, no history; only the weights fitted (CV) on MMLU"
    results["mmlu_cv"]["qsef_corpus_only"] = out
    m = mk("qsef", **corpus_only)()
    m.fit(mm)
    for set_name, ds in tests.items():
        results[set_name]["qsef_corpus_only"] = report(ds.labels, m.predict(ds))

    # the shipped calibration: weights fitted on all of MMLU with the default (corpus) profiles and the
    # MMLU questions as feedback history, as the router runs it once feedback exists
    if args.write_calibration:
        from qsef.calibration import cross_validate, fit_conditional_logit, save_calibration
        from qsef.encoder import texts_digest

        m = mk("qsef", blend=0.0)()
        m.fit(mm)
        cal_path = Path("qsef/data/calibration.json")
        names = list(m.fit_info["beta"])
        loo = m._loo_history
        vals = m._values(mm, loo)
        x = np.stack([vals[n] for n in names], -1).astype(np.float64)
        doms = [p.domain for p in m.experts]
        y = np.array([doms.index(lab) for lab in mm.labels])
        fit = fit_conditional_logit(x, y, names, l2=m.l2)
        fit.cv = cross_validate(x, y, names, k=args.folds, l2=m.l2)
        save_calibration(fit, cal_path, data={"rows": "MMLU mapped to domains (SPEC §8)", "n": len(mm.texts),
                                              "sha256": texts_digest(mm.texts), "components": names,
                                              "history": "MMLU questions (leave-one-out), hybrid dense+BM25"},
                         note="written by benchmarks/routing_mmlu.py --write-calibration")
        # the same fit for engines without any history (C_model then carries no expert-specific signal)
        m0 = mk("qsef", blend=0.0, use_history=False)()
        m0.fit(mm)
        vals0 = m0._values(mm, None)
        names0 = list(m0.fit_info["beta"])
        x0 = np.stack([vals0[n] for n in names0], -1).astype(np.float64)
        cv0 = cross_validate(x0, y, names0, k=args.folds, l2=m0.l2)
        doc = json.loads(cal_path.read_text())
        doc["weights_no_history"] = {k: float(v) for k, v in vars(m0.weights).items()}
        doc["coefficients_no_history"] = m0.fit_info["beta"]
        doc["cv_no_history"] = cv0
        cal_path.write_text(json.dumps(doc, indent=2) + "\n")
        results["shipped_calibration"] = doc

    if args.llm:
        rng = np.random.default_rng(0)
        for set_name, ds in (("mmlu_cv", mm), *tests.items()):
            idx = np.sort(rng.choice(len(ds.texts), size=min(args.llm, len(ds.texts)), replace=False))
            sub = ds.subset(idx)
            t0 = time.time()
            m = make_method("llm", engine=engine, model=args.llm_model)
            out = report(sub.labels, m.predict(sub))
            out.update(subsample=len(idx), model=args.llm_model, seconds=round(time.time() - t0, 1))
            results[set_name]["llm"] = out
            log.info("llm", extra={"set": set_name, "acc": out["accuracy"]})
    else:
        for set_name in ("mmlu_cv", *tests):
            results[set_name]["llm"] = {"measured": False, "note": "not measured in this run (pass --llm N)"}

    if not args.skip_ablations:
        from qsef.components import DomainSparsity, EmbeddingDistance, KGDistance, component_resolver
        from qsef.eval.routing import STATIC

        def ablation(label: str, make: Any, train: LabelledSet, sets: dict[str, LabelledSet]) -> None:
            out, _ = cross_validate_method(make, train, k=args.folds)
            results["ablation_mmlu_cv"][label] = out["accuracy"]
            m = make()
            m.fit(train)
            for set_name, ds in sets.items():
                results[f"ablation_{set_name}"][label] = report(ds.labels, m.predict(ds))["accuracy"]
            log.info("ablation", extra={"variant": label, "acc": round(out["accuracy"], 4)})

        for comp in component_resolver.names:
            ablation(comp, mk("qsef", ablate=[comp]), mm, tests)
        for variant, kw in (("no_history", {"use_history": False}), ("no_question_centroid", {"blend": 0.0}),
                            ("no_history_shrinkage", {"history_shrink": False})):
            ablation(variant, mk("qsef", **kw), mm, tests)
        # component variants: D_emb without sub-topic prototypes (SPEC's centroid-only formula), the other
        # two D_kg distances, C_sparsity with the missing-concept share and with BM25 instead of keyness;
        # each swaps one engine component and recomputes the cached features that depend on it
        default_components = list(engine.components)
        swaps = [("d_emb_centroid_only", EmbeddingDistance(prototype_weight=0.0))]
        swaps += [(f"d_kg_{v}", KGDistance(variant=v)) for v in ("lca", "embedding")]
        swaps += [("c_sparsity_concepts", DomainSparsity(lexical_weight=0.5)),
                  ("c_sparsity_bm25", DomainSparsity(lexical="bm25", lexical_weight=0.5))]
        for variant, comp in swaps:
            engine.components = [comp if c.name == comp.name else c for c in default_components]

            def recomputed(ds: LabelledSet, set_name: str, name: str = comp.name) -> LabelledSet:
                if name not in STATIC:
                    return ds
                out = LabelledSet(ds.texts, ds.emb, ds.labels, {k: v for k, v in ds.static.items() if k != name})
                return _static_cached(out, engine, experts, set_name)

            ablation(variant, mk("qsef"), recomputed(mm, "mmlu"), {k: recomputed(v, k) for k, v in tests.items()})
        engine.components = default_components

    if args.calibration_only:
        print(json.dumps(results.get("shipped_calibration", {}), indent=2))
        return 0
    res_dir = Path(args.out).parent
    res_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(args.out).stem  # another --out (another encoder, say) must not overwrite the default plots
    prefix = "routing" if stem == "routing_mmlu" else stem
    confusion_png(mm.labels, preds["qsef"], res_dir / f"{stem}_confusion_qsef.png", title="QSEF, MMLU 5-fold CV")
    for set_name, ds in tests.items():
        confusion_png(ds.labels, preds[f"qsef_{set_name}"], res_dir / f"{prefix}_{set_name}_confusion_qsef.png",
                      title=f"QSEF, {set_name} set")
    baselines = [k for k in ("centroid", "knn", "zeroshot", "random") if k in results["mmlu_cv"]]
    best = max(baselines, key=lambda k: results["mmlu_cv"][k]["accuracy"])
    significance = {"mmlu_cv": {b: mcnemar(mm.labels, preds["qsef"], preds[b]) for b in baselines}}
    for set_name, ds in tests.items():
        significance[set_name] = {b: mcnemar(ds.labels, preds[f"qsef_{set_name}"], preds[f"{b}_{set_name}"])
                                  for b in baselines}
    doc = {
        "benchmark": "routing_mmlu",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "note": "2 CPU cores shared with other jobs"},
        "encoder": enc.name,
        "n_mmlu": len(mm.texts), **{f"n_{k}": len(v.texts) for k, v in tests.items()}, "folds": args.folds,
        "test_sets": {"heldout": f"{args.heldout}: written while developing; its errors were inspected",
                      "blind": f"{args.blind}: written before tuning by someone who never ran a router on it; "
                               "never used to choose anything"},
        "profiles": [{"name": p.name, "kg_domain": p.kg_domain, "anchors": len(p.kg_anchors), **p.meta} for p in experts],
        "flags_seen": sorted({f for fl in mm.flags for f in fl}),
        "best_baseline_mmlu": best,
        "qsef_minus_best_baseline_mmlu": results["mmlu_cv"]["qsef"]["accuracy"] - results["mmlu_cv"][best]["accuracy"],
        "mcnemar_qsef_vs": significance,
        "seconds": round(time.time() - t_start, 1),
        **results,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2, default=float) + "\n")
    print(markdown(doc))
    Path(args.out).with_suffix(".md").write_text(markdown(doc) + "\n")
    return 0


def markdown(doc: dict) -> str:
    doms = list(DOMAINS)
    sets = ["mmlu_cv", *[k for k in ("heldout", "blind") if doc.get(k)]]
    title = {"mmlu_cv": "MMLU CV", "heldout": "held-out", "blind": "blind"}
    sizes = ", ".join(f"{title[k]} n={doc.get(f'n_{k}')}" for k in sets[1:])
    lines = [f"# Routing accuracy ({doc['date']}, {doc['machine']['node']})", "",
             f"`{doc['command']}` — MMLU n={doc['n_mmlu']} ({doc['folds']}-fold CV), {sizes}", ""]
    lines += [f"- **{k}**: {v}" for k, v in doc.get("test_sets", {}).items()] + [""]

    def cell(r: dict, d: str | None = None) -> str:
        if "accuracy" not in r:
            return "n/m"
        v = r["accuracy"] if d is None else r["per_domain"].get(d)
        return "-" if v is None else f"{100 * v:.1f}"

    lines += ["| method | " + " | ".join(title[k] for k in sets) + " |", "|---|" + "---|" * len(sets)]
    methods = ("qsef", "qsef_corpus_only", "centroid", "knn", "zeroshot", "llm", "random")
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(cell(doc[k].get(m, {})) for k in sets) + " |")
    for k in sets:
        lines += ["", f"Per domain, {title[k]}:", "", "| method | " + " | ".join(doms) + " |", "|---|" + "---|" * len(doms)]
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(cell(doc[k].get(m, {}), d) for d in doms) + " |")
    if doc.get("mcnemar_qsef_vs"):
        lines += ["", "McNemar (exact, two-sided), QSEF vs each baseline on the same rows:", "",
                  "| set | baseline | QSEF right, baseline wrong | baseline right, QSEF wrong | p |", "|---|---|---|---|---|"]
        for set_name, tests in doc["mcnemar_qsef_vs"].items():
            for b, t in tests.items():
                lines.append(f"| {set_name} | {b} | {t['a_right_b_wrong']} | {t['b_right_a_wrong']} | {t['p_value']:.2g} |")
    if doc.get("ablation_mmlu_cv"):
        lines += ["", "| qsef without / with variant | " + " | ".join(title[k] for k in sets) + " |", "|---|" + "---|" * len(sets),
                  "| (nothing) | " + " | ".join(cell(doc[k]["qsef"]) for k in sets) + " |"]
        for name in doc["ablation_mmlu_cv"]:
            vals = [doc[f"ablation_{k}"].get(name) for k in sets]
            lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{100 * v:.1f}" for v in vals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
