"""Routing accuracy: QSEF vs baselines on MMLU (5-fold CV) and on the held-out non-MMLU set, plus ablations.

Everything is measured in one run, on the same folds and the same cached MiniLM embeddings:

* MMLU mapped to our five domains (SPEC §8), stratified 5-fold CV: qsef, centroid, knn, zeroshot, random
  (and llm on a seeded subsample when ``--llm N`` is given);
* held-out rows from other sources and styles (``qsef/corpora/data/routing_heldout.jsonl``): every method
  trained on all of MMLU, plus ``qsef (no MMLU)`` — corpus profiles and shipped calibration only;
* ablations: qsef with each component removed, on both sets.

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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("routing_bench")


def _static_cached(ds, engine, experts, name: str):
    """attach_static with an on-disk cache keyed by the texts, the profiles and the graphs available."""
    from qsef.encoder import texts_digest
    from qsef.eval.routing import STATIC, attach_static, engine_component
    from qsef.settings import get_settings

    variant = engine_component(engine, "d_kg").variant
    key = texts_digest(ds.texts + [p.name + str(p.meta.get("corpus_sha256")) + str(p.kg_domain) + ",".join(p.kg_anchors)
                                   for p in experts] + [f"d_kg={variant}"])[:16]
    folder = get_settings().path("cache", "routing_features")
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
    ap.add_argument("--heldout", default="qsef/corpora/data/routing_heldout.jsonl")
    ap.add_argument("--skip-ablations", action="store_true")
    ap.add_argument("--write-calibration", action="store_true", help="refit qsef/data/calibration.json on all MMLU")
    ap.add_argument("--calibration-only", action="store_true", help="only refit the calibration (with --write-calibration)")
    args = ap.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    t_start = time.time()

    from qsef.corpora import load_mmlu
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

    engine = QSEFEngine()
    experts = default_profiles()
    engine.experts = experts
    enc = engine.encoder

    mmlu = [{"text": r["text"], "domain": r["domain"]} for r in load_mmlu()]
    held = load_rows(args.heldout) if Path(args.heldout).is_file() else []
    mm = LabelledSet([r["text"] for r in mmlu], encode_cached([r["text"] for r in mmlu], encoder=enc, name="mmlu"),
                     np.array([r["domain"] for r in mmlu]))
    _static_cached(mm, engine, experts, "mmlu")
    ho = None
    if held:
        ho = LabelledSet([r["text"] for r in held], encode_cached([r["text"] for r in held], encoder=enc, name="heldout"),
                         np.array([r["domain"] for r in held]))
        _static_cached(ho, engine, experts, "heldout")
    log.info("data ready", extra={"mmlu": len(mm.texts), "heldout": len(held), "s": round(time.time() - t_start)})

    results: dict = {"mmlu_cv": {}, "heldout": {}, "ablation_mmlu_cv": {}, "ablation_heldout": {}}
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
        if ho is not None:
            m = mk(name)()
            m.fit(mm)
            p = m.predict(ho)
            results["heldout"][name] = report(ho.labels, p)
            preds[f"{name}_heldout"] = p
            if name == "qsef":
                results["qsef_fit_on_all_mmlu"] = m.fit_info
            log.info("heldout", extra={"method": name, "acc": round(results["heldout"][name]["accuracy"], 4)})

    if args.calibration_only:
        args.skip_ablations, args.llm = True, 0
    # qsef with corpus-only profiles and no history: only its 3-4 weights are fitted on MMLU
    corpus_only = {"blend": 0.0, "use_history": False}
    out, _ = cross_validate_method(mk("qsef", **corpus_only), mm, k=args.folds)
    out["note"] = "corpus profiles, no history; only the weights fitted (CV) on MMLU"
    results["mmlu_cv"]["qsef_corpus_only"] = out
    if ho is not None:
        m = mk("qsef", **corpus_only)()
        m.fit(mm)
        results["heldout"]["qsef_corpus_only"] = report(ho.labels, m.predict(ho))

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
        for set_name, ds in (("mmlu_cv", mm), ("heldout", ho)):
            if ds is None:
                continue
            idx = np.sort(rng.choice(len(ds.texts), size=min(args.llm, len(ds.texts)), replace=False))
            sub = ds.subset(idx)
            t0 = time.time()
            m = make_method("llm", model=args.llm_model)
            out = report(sub.labels, m.predict(sub))
            out.update(subsample=len(idx), model=args.llm_model, seconds=round(time.time() - t0, 1))
            results[set_name]["llm"] = out
            log.info("llm", extra={"set": set_name, "acc": out["accuracy"]})
    else:
        for set_name in ("mmlu_cv", "heldout"):
            results[set_name]["llm"] = {"measured": False, "note": "not measured in this run (pass --llm N)"}

    if not args.skip_ablations:
        from qsef.components import component_resolver

        for comp in component_resolver.names:
            out, _ = cross_validate_method(mk("qsef", ablate=[comp]), mm, k=args.folds)
            results["ablation_mmlu_cv"][comp] = out["accuracy"]
            if ho is not None:
                m = mk("qsef", ablate=[comp])()
                m.fit(mm)
                results["ablation_heldout"][comp] = report(ho.labels, m.predict(ho))["accuracy"]
            log.info("ablation", extra={"without": comp, "acc": round(out["accuracy"], 4)})
        for variant, kw in (("no_history", {"use_history": False}), ("no_question_centroid", {"blend": 0.0}),
                            ("no_history_shrinkage", {"history_shrink": False})):
            out, _ = cross_validate_method(mk("qsef", **kw), mm, k=args.folds)
            results["ablation_mmlu_cv"][variant] = out["accuracy"]
            if ho is not None:
                m = mk("qsef", **kw)()
                m.fit(mm)
                results["ablation_heldout"][variant] = report(ho.labels, m.predict(ho))["accuracy"]
        # component variants: D_emb without sub-topic prototypes (SPEC's centroid-only formula) and the
        # other two D_kg distances; each swaps one engine component and recomputes what depends on it
        from qsef.components import EmbeddingDistance, KGDistance

        default_components = list(engine.components)
        swaps = [("d_emb_centroid_only", EmbeddingDistance(prototype_weight=0.0))]
        swaps += [(f"d_kg_{v}", KGDistance(variant=v)) for v in ("lca", "embedding")]
        for variant, comp in swaps:
            engine.components = [comp if c.name == comp.name else c for c in default_components]
            t0 = time.time()
            mv, hv = mm, ho
            if comp.name == "d_kg":
                mv = LabelledSet(mm.texts, mm.emb, mm.labels, {k: v for k, v in mm.static.items() if k != "d_kg"})
                _static_cached(mv, engine, experts, "mmlu")
                if ho is not None:
                    hv = LabelledSet(ho.texts, ho.emb, ho.labels, {k: v for k, v in ho.static.items() if k != "d_kg"})
                    _static_cached(hv, engine, experts, "heldout")
            out, _ = cross_validate_method(mk("qsef"), mv, k=args.folds)
            results["ablation_mmlu_cv"][variant] = out["accuracy"]
            if hv is not None:
                m = mk("qsef")()
                m.fit(mv)
                results["ablation_heldout"][variant] = report(hv.labels, m.predict(hv))["accuracy"]
            log.info("variant", extra={"variant": variant, "acc": round(out["accuracy"], 4),
                                       "s": round(time.time() - t0, 1)})
        engine.components = default_components

    if args.calibration_only:
        print(json.dumps(results.get("shipped_calibration", {}), indent=2))
        return 0
    res_dir = Path(args.out).parent
    res_dir.mkdir(parents=True, exist_ok=True)
    confusion_png(mm.labels, preds["qsef"], res_dir / "routing_mmlu_confusion_qsef.png", title="QSEF, MMLU 5-fold CV")
    if ho is not None:
        confusion_png(ho.labels, preds["qsef_heldout"], res_dir / "routing_heldout_confusion_qsef.png",
                      title="QSEF, held-out set")
    baselines = [k for k in ("centroid", "knn", "zeroshot", "random") if k in results["mmlu_cv"]]
    best = max(baselines, key=lambda k: results["mmlu_cv"][k]["accuracy"])
    significance = {"mmlu_cv": {b: mcnemar(mm.labels, preds["qsef"], preds[b]) for b in baselines}}
    if ho is not None:
        significance["heldout"] = {b: mcnemar(ho.labels, preds["qsef_heldout"], preds[f"{b}_heldout"])
                                   for b in baselines}
    doc = {
        "benchmark": "routing_mmlu",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "note": "2 CPU cores shared with other jobs"},
        "encoder": enc.name,
        "n_mmlu": len(mm.texts), "n_heldout": len(held), "folds": args.folds,
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
    doms = ["medicine", "law", "code", "finance", "general"]
    lines = [f"# Routing accuracy ({doc['date']}, {doc['machine']['node']})", "",
             f"`{doc['command']}` — MMLU n={doc['n_mmlu']} ({doc['folds']}-fold CV), held-out n={doc['n_heldout']}", "",
             "| method | MMLU CV | " + " | ".join(doms) + " | held-out | " + " | ".join(doms) + " |",
             "|---|---|" + "---|" * len(doms) + "---|" + "---|" * len(doms)]
    for m in ("qsef", "qsef_corpus_only", "centroid", "knn", "zeroshot", "llm", "random"):
        a, b = doc["mmlu_cv"].get(m, {}), doc["heldout"].get(m, {})

        def cell(r, d=None):
            if "accuracy" not in r:
                return "n/m"
            v = r["accuracy"] if d is None else r["per_domain"].get(d)
            return "-" if v is None else f"{100 * v:.1f}"

        lines.append(f"| {m} | {cell(a)} | " + " | ".join(cell(a, d) for d in doms) + f" | {cell(b)} | "
                     + " | ".join(cell(b, d) for d in doms) + " |")
    if doc.get("mcnemar_qsef_vs"):
        lines += ["", "McNemar (exact, two-sided), QSEF vs each baseline on the same rows:", "",
                  "| set | baseline | QSEF right, baseline wrong | baseline right, QSEF wrong | p |", "|---|---|---|---|---|"]
        for set_name, tests in doc["mcnemar_qsef_vs"].items():
            for b, t in tests.items():
                lines.append(f"| {set_name} | {b} | {t['a_right_b_wrong']} | {t['b_right_a_wrong']} | {t['p_value']:.2g} |")
    if doc.get("ablation_mmlu_cv"):
        lines += ["", "| qsef without / with variant | MMLU CV | held-out |", "|---|---|---|",
                  f"| (nothing) | {100 * doc['mmlu_cv']['qsef']['accuracy']:.1f} | "
                  f"{100 * doc['heldout']['qsef']['accuracy']:.1f} |" if doc["heldout"] else "| (nothing) | - | - |"]
        for k, v in doc["ablation_mmlu_cv"].items():
            h = doc["ablation_heldout"].get(k)
            lines.append(f"| {k} | {100 * v:.1f} | {'-' if h is None else f'{100 * h:.1f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
