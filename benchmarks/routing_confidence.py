"""Is QSEF's confidence worth trusting? TE validity (SPEC §8) and the threshold fallback, measured.

For every question QSEF routes, ``P = TE / ΣTE`` of the chosen expert is the calibrated probability that it
is the right one. This script measures, on MMLU (5-fold, out-of-fold) and on the two held-out sets (fitted on
all of MMLU, as the router runs with its seed history):

* TE validity: the point-biserial correlation between the chosen expert's TE (and P) and whether it was
  right, and the AUROC of P for telling right from wrong routes;
* calibration: expected calibration error of P (10 equal-width bins) and its reliability table;
* the threshold fallback: for τ on P, the share of questions flagged low-confidence and the accuracy on the
  rest (selective accuracy) — what ``select_with_threshold`` trades.

    .venv/bin/python benchmarks/routing_confidence.py
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save
from routing_mmlu import _static_cached

from core.settings import Settings

SETTINGS = Settings()  # a benchmark is an entry point: settings are built here

TAUS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random right route has a higher score than a random wrong one (ties count half)."""
    from scipy.stats import rankdata

    pos, n_pos = positive.astype(bool), int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confidence_report(te: np.ndarray, correct: np.ndarray) -> dict:
    """TE validity, calibration and selective accuracy from the ``(N, E)`` TE matrix and top-1 correctness.

    ``p_top < tau`` is the rule of the router's ``threshold`` selection strategy
    (:func:`qsef.selection.select_with_threshold`), on the same P.
    """
    from qsef.selection import choice_probabilities

    p_all = choice_probabilities(te)
    top = te.argmax(axis=1)
    te_top, p_top = te[np.arange(len(te)), top], p_all[np.arange(len(te)), top]
    y = correct.astype(float)
    bins = np.minimum((p_top * 10).astype(int), 9)
    reliability = [{"bin": f"{b / 10:.1f}-{(b + 1) / 10:.1f}", "n": int((bins == b).sum()),
                    "mean_p": float(p_top[bins == b].mean()), "accuracy": float(y[bins == b].mean())}
                   for b in range(10) if (bins == b).any()]
    ece = sum(r["n"] * abs(r["mean_p"] - r["accuracy"]) for r in reliability) / len(y)
    selective = [{"tau": t, "flagged": float((p_top < t).mean()),
                  "accuracy_unflagged": float(y[p_top >= t].mean()) if (p_top >= t).any() else float("nan")}
                 for t in TAUS]
    return {
        "n": len(y), "accuracy": float(y.mean()),
        "corr_te_correct": float(np.corrcoef(te_top, y)[0, 1]) if 0 < y.mean() < 1 else float("nan"),
        "corr_p_correct": float(np.corrcoef(p_top, y)[0, 1]) if 0 < y.mean() < 1 else float("nan"),
        "auroc_p": auroc(p_top, y), "ece": float(ece), "mean_p": float(p_top.mean()),
        "reliability": reliability, "selective": selective,
    }


def main() -> int:
    logging.basicConfig(level="WARNING")
    from corpora import load_mmlu, load_routing_heldout
    from qsef.calibration import kfold_indices
    from qsef.encoder import encode_cached
    from qsef.engine import QSEFEngine
    from qsef.eval.routing import LabelledSet, make_method
    from qsef.profiles import default_profiles

    engine = QSEFEngine(settings=SETTINGS)
    experts = default_profiles(SETTINGS)
    engine.experts = experts

    def labelled(rows: list[dict], name: str) -> LabelledSet:
        texts = [r["text"] for r in rows]
        ds = LabelledSet(texts, encode_cached(texts, encoder=engine.encoder, name=name, cache_dir=SETTINGS.path("cache", "embeddings")),
                         np.array([r["domain"] for r in rows]))
        return _static_cached(ds, engine, experts, name)

    mm = labelled(load_mmlu(SETTINGS), "mmlu")
    sets = {"heldout": labelled(load_routing_heldout(), "heldout"),
            "blind": labelled(load_routing_heldout(blind=True), "blind")}

    def fitted(train: LabelledSet):
        return make_method("qsef", engine=engine, experts=experts).fit(train)

    # MMLU, out of fold
    te = np.zeros((len(mm.texts), len(experts)))
    for test_idx in kfold_indices(len(mm.texts), 5, seed=0, labels=mm.labels):
        m = fitted(mm.subset(np.setdiff1d(np.arange(len(mm.texts)), test_idx)))
        te[test_idx] = m.scores(mm.subset(test_idx))[1]
    domains = np.array([p.domain for p in experts])
    results = {"mmlu_cv": confidence_report(te, domains[te.argmax(1)] == mm.labels)}
    m = fitted(mm)
    for name, ds in sets.items():
        te = m.scores(ds)[1]
        results[name] = confidence_report(te, domains[te.argmax(1)] == ds.labels)
    save("routing_confidence", {"benchmark": "routing_confidence", "taus": list(TAUS), **results})
    print("\n| set | accuracy | corr(TE, right) | corr(P, right) | AUROC(P) | ECE | "
          + " | ".join(f"τ={t}: flagged / acc" for t in TAUS[1:]) + " |")
    for name, r in results.items():
        sel = " | ".join(f"{100 * s['flagged']:.0f}% / {100 * s['accuracy_unflagged']:.1f}" for s in r["selective"][1:])
        print(f"| {name} | {100 * r['accuracy']:.1f} | {r['corr_te_correct']:.2f} | {r['corr_p_correct']:.2f} | "
              f"{r['auroc_p']:.3f} | {r['ece']:.3f} | {sel} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
