"""Routers between experts of different capability, judged on an answer matrix.

Every router here maps a question to one expert; its *outcome* is the accuracy and mean cost of the
experts it picked (:func:`outcome`). Routers learn only from a disjoint history (the training rows of
an answer matrix) and are scored on the rest:

* **QSEF** — the engine scores every expert with ``C_model`` backed by an
  :class:`qsef.history.AnswerHistory` built from the history rows (each expert's measured correctness on
  similar past questions); then a strategy picks: ``argmax`` TE, ``cost_aware`` (max ``TE − λ·cost``,
  cost normalised by the fleet's largest), ``threshold`` (the cheapest expert whose share ``P ≥ τ``,
  else argmax TE — a cascade on the calibrated share);
* **kNN** — each expert's accuracy estimated from its answers on the k most similar history questions,
  then max ``acc − λ·cost``;
* **learned** (RouteLLM-style) — one logistic-regression classifier per expert over MiniLM embeddings
  predicts P(correct); then max ``p − λ·cost``;
* references — each single expert, uniform random routing (expected value), and the oracle (the
  cheapest expert that answers correctly, when one does).

Metrics follow RouteLLM: PGR ``(acc − acc_weak) / (acc_strong − acc_weak)`` and APGR, the area under a
router's best-PGR-so-far curve over normalised cost ``(c − c_weak) / (c_strong − c_weak)`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Outcome", "apgr", "bootstrap_apgr", "choose", "folds", "knn_accuracy", "learned_accuracy",
           "mcnemar_exact", "oracle", "outcome", "pgr", "qsef_choice", "random_outcome", "spearman"]


@dataclass
class Outcome:
    """Accuracy and mean cost of a routing decision ``choice (N,)`` (expert indices)."""

    accuracy: float
    mean_cost: float
    share: list[float]  # fraction of questions sent to each expert

    def to_dict(self) -> dict[str, object]:
        return {"accuracy": self.accuracy, "mean_cost": self.mean_cost, "share": self.share}


def outcome(correct: np.ndarray, costs: np.ndarray, choice: np.ndarray) -> Outcome:
    """``correct (N, E)`` bool, ``costs (E,)``, ``choice (N,)`` int."""
    n, e = correct.shape
    if n == 0:
        return Outcome(0.0, 0.0, [0.0] * e)
    hit = correct[np.arange(n), choice]
    share = np.bincount(choice, minlength=e) / n
    return Outcome(float(hit.mean()), float(costs[choice].mean()), [float(x) for x in share])


def oracle(correct: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """The cheapest correct expert per question (the cheapest overall when none is correct): ``(N,)``."""
    order = np.argsort(costs, kind="stable")
    c = correct[:, order]
    first = np.where(c.any(1), c.argmax(1), 0)
    return order[first]


def random_outcome(correct: np.ndarray, costs: np.ndarray) -> Outcome:
    """Uniform random routing, in expectation (no sampling noise)."""
    e = correct.shape[1]
    return Outcome(float(correct.mean()), float(costs.mean()), [1.0 / e] * e)


def choose(score: np.ndarray, costs: np.ndarray, lam: float) -> np.ndarray:
    """``argmax_e score[:, e] − λ·cost_e / max(cost)``: ``(N, E) -> (N,)`` (first on ties)."""
    norm = costs / max(float(costs.max()), 1e-12)
    return np.argmax(score - lam * norm[None, :], axis=1)


def qsef_choice(te: np.ndarray, p: np.ndarray, costs: np.ndarray, strategy: str, *, lam: float = 0.0,
                tau: float = 0.34) -> np.ndarray:
    """One expert per row from QSEF's ``TE (N, E)`` and shares ``P (N, E)``.

    Strategies: ``argmax``; ``cost_aware`` (:func:`qsef.selection.select_cost_aware` with one expert,
    cost normalised by the largest); ``threshold`` — the cheapest expert with ``P ≥ τ``, else argmax TE.
    """
    if strategy == "argmax":
        return np.argmax(te, axis=1)
    if strategy == "cost_aware":
        return choose(te, costs, lam)
    if strategy == "threshold":
        order = np.argsort(costs, kind="stable")
        ok = p[:, order] >= tau
        cheapest_ok = order[ok.argmax(1)]
        return np.where(ok.any(1), cheapest_ok, np.argmax(te, axis=1))
    raise ValueError(f"unknown strategy {strategy!r}; choose from argmax, cost_aware, threshold")


def knn_accuracy(train_emb: np.ndarray, train_correct: np.ndarray, test_emb: np.ndarray, *, k: int = 20,
                 prior: float = 2.0) -> np.ndarray:
    """Each expert's accuracy over the ``k`` most similar history questions (cosine-weighted, shrunk
    toward its overall accuracy by ``prior`` pseudo-counts): ``(T, E)``."""
    sims = test_emb @ train_emb.T
    k = min(k, train_emb.shape[0])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    w = np.maximum(np.take_along_axis(sims, idx, axis=1), 0.0)[:, :, None]  # (T, k, 1)
    c = train_correct[idx].astype(np.float64)  # (T, k, E)
    base = train_correct.mean(0)[None, :]
    return ((w * c).sum(1) + prior * base) / (w.sum(1) + prior)


def learned_accuracy(train_emb: np.ndarray, train_correct: np.ndarray, test_emb: np.ndarray, *,
                     c: float = 1.0, seed: int = 0) -> np.ndarray:
    """P(expert correct | embedding) from one logistic regression per expert: ``(T, E)``."""
    from sklearn.linear_model import LogisticRegression

    out = np.zeros((test_emb.shape[0], train_correct.shape[1]))
    for j in range(train_correct.shape[1]):
        y = train_correct[:, j].astype(int)
        if y.min() == y.max():
            out[:, j] = float(y[0])
            continue
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(train_emb, y)
        out[:, j] = clf.predict_proba(test_emb)[:, 1]
    return out


def pgr(acc: float, weak: float, strong: float) -> float:
    """Performance gap recovered: 0 at the weak expert's accuracy, 1 at the strong one's."""
    gap = strong - weak
    return float((acc - weak) / gap) if abs(gap) > 1e-12 else float("nan")


def apgr(points: Sequence[tuple[float, float]], *, weak: tuple[float, float], strong: tuple[float, float],
         grid: int = 1001) -> float:
    """Area under the best-PGR-so-far curve over normalised cost in [0, 1].

    Args:
        points: ``(mean_cost, accuracy)`` of a router's operating points (e.g. a λ sweep).
        weak, strong: ``(mean_cost, accuracy)`` of the weakest and strongest single experts; the weak
            expert is always an available operating point (PGR 0 at cost 0).
    """
    (cw, aw), (cs, as_) = weak, strong
    span = cs - cw
    if abs(span) < 1e-12 or abs(as_ - aw) < 1e-12:
        return float("nan")
    xs = np.linspace(0.0, 1.0, grid)
    pts = sorted([(0.0, 0.0)] + [((c - cw) / span, pgr(a, aw, as_)) for c, a in points])
    x0 = np.array([x for x, _ in pts])
    best_so_far = np.maximum.accumulate(np.array([g for _, g in pts]))  # best PGR among points with cost <= x0
    best = best_so_far[np.searchsorted(x0, xs + 1e-12, side="right") - 1]  # x >= 0 always reaches (0, 0)
    return float(np.trapezoid(best, xs) if hasattr(np, "trapezoid") else np.trapz(best, xs))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def mcnemar_exact(a_hit: np.ndarray, b_hit: np.ndarray) -> dict[str, float]:
    """Exact two-sided McNemar test of two routers' correctness ``(N,)`` bool on the same questions.

    Only the discordant questions carry information: under "equally accurate", the ones only ``a`` got
    right are Binomial(discordant, ½). Returns the two counts, the accuracy difference ``a − b`` and the p-value.
    """
    from scipy.stats import binomtest

    a_only = int((a_hit & ~b_hit).sum())
    b_only = int((~a_hit & b_hit).sum())
    d = a_only + b_only
    return {"a_only_right": a_only, "b_only_right": b_only,
            "accuracy_difference": float(a_hit.mean() - b_hit.mean()),
            "p_value": float(binomtest(a_only, d, 0.5).pvalue) if d else 1.0}


def bootstrap_apgr(correct: np.ndarray, costs: np.ndarray, sweep: Sequence[np.ndarray], *, weak_j: int,
                   strong_j: int, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """APGR of one sweep with a 95% percentile interval over questions resampled with replacement.

    The routers' out-of-fold choices are held fixed (the interval is the question sample's uncertainty, not
    that of the routers' training); the weakest and strongest experts keep their identities, their accuracies
    (and so PGR) are re-taken on every resample.

    Args:
        sweep: the choices ``(N,)`` of each operating point of the sweep (e.g. one per λ).
        weak_j, strong_j: expert indices of the weakest and strongest single expert.
    """
    n = correct.shape[0]
    rows = np.arange(n)
    hit = np.array([correct[rows, c] for c in sweep], dtype=float)  # (points, N)
    cost = np.array([costs[c] for c in sweep], dtype=float)

    def area(idx: np.ndarray) -> float:
        acc = correct[idx].mean(0)
        pts = list(zip(cost[:, idx].mean(1), hit[:, idx].mean(1), strict=True))
        return apgr(pts, weak=(costs[weak_j], acc[weak_j]), strong=(costs[strong_j], acc[strong_j]))

    rng = np.random.default_rng(seed)
    boots = np.array([area(rng.integers(0, n, n)) for _ in range(n_boot)])
    low, high = np.nanpercentile(boots, [2.5, 97.5])
    return {"apgr": area(rows), "ci95_low": float(low), "ci95_high": float(high), "n_boot": n_boot}


def folds(labels: Sequence[str], k: int = 5, *, seed: int = 0) -> list[np.ndarray]:
    """Stratified k folds (test indices) over ``labels``; deterministic."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    out: list[list[int]] = [[] for _ in range(k)]
    for d in sorted(set(labels)):
        idx = np.flatnonzero(labels == d)
        rng.shuffle(idx)
        for i, j in enumerate(idx):
            out[i % k].append(int(j))
    return [np.array(sorted(f)) for f in out]


LAMBDAS = tuple(float(x) for x in np.concatenate([[0.0], np.geomspace(1e-3, 4.0, 36)]))
TAUS = tuple(float(x) for x in np.linspace(0.0, 0.7, 36))
# Dense grids for comparing QSEF configurations: a λ or τ step is fixed while TE's and P's scale moves with
# the fitted weights, so on the coarse grids above part of an APGR difference is where the steps happen to fall.
FINE_LAMBDAS = tuple(float(x) for x in np.concatenate([[0.0], np.geomspace(1e-7, 10.0, 400)]))
FINE_TAUS = tuple(float(x) for x in np.linspace(0.0, 1.0, 401))


def cross_fit(correct: np.ndarray, emb: np.ndarray, labels: Sequence[str], qsef_scores, *, k: int = 5,
              seed: int = 0, extra_qsef: Mapping[str, Callable] | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold router scores: every question is scored by routers that learned from the other folds.

    Args:
        correct: ``(N, E)`` answer matrix; emb: ``(N, dim)`` unit embeddings; labels: domains (strata).
        qsef_scores: ``(train_idx, test_idx) -> (TE, P)`` each ``(len(test_idx), E)`` — QSEF with its
            history built from ``train_idx`` only.
        k: folds (``k <= 1``: not allowed; pass a separate history instead).
        extra_qsef: more QSEF configurations, name -> a function like ``qsef_scores`` (e.g. ``qsef_refit``:
            weights refitted on the training folds' answers).

    Returns:
        ``{"te", "p", "knn", "learned"}`` each ``(N, E)``, plus ``te_<name>`` and ``p_<name>`` per extra
        configuration.
    """
    n, e = correct.shape
    extra = dict(extra_qsef or {})
    names = ["te", "p", "knn", "learned", *(f"{kind}_{x}" for x in extra for kind in ("te", "p"))]
    out = {name: np.zeros((n, e)) for name in names}
    for test in folds(labels, k, seed=seed):
        train = np.setdiff1d(np.arange(n), test)
        te, p = qsef_scores(train, test)
        out["te"][test], out["p"][test] = te, p
        for x, fn in extra.items():
            out[f"te_{x}"][test], out[f"p_{x}"][test] = fn(train, test)
        out["knn"][test] = knn_accuracy(emb[train], correct[train], emb[test])
        out["learned"][test] = learned_accuracy(emb[train], correct[train], emb[test])
    return out


STRATEGIES = ("argmax", "cost_aware", "threshold")


def _qsef_sweeps(correct: np.ndarray, costs: np.ndarray, te: np.ndarray, p: np.ndarray, *,
                 lambdas: Sequence[float] = LAMBDAS, taus: Sequence[float] = TAUS) -> dict[str, list[tuple[float, Outcome]]]:
    """A QSEF configuration's cost-aware (λ) and threshold (τ) sweeps."""
    return {
        "cost_aware": [(lm, outcome(correct, costs, qsef_choice(te, p, costs, "cost_aware", lam=lm)))
                       for lm in lambdas],
        "threshold": [(t, outcome(correct, costs, qsef_choice(te, p, costs, "threshold", tau=t))) for t in taus],
    }


def _qsef_config(correct: np.ndarray, costs: np.ndarray, te: np.ndarray, p: np.ndarray, *, lam: float,
                 tau: float) -> tuple[dict[str, np.ndarray], dict[str, list[tuple[float, Outcome]]]]:
    """One QSEF configuration's choices per strategy and its λ and τ sweeps."""
    choices = {s: qsef_choice(te, p, costs, s, lam=lam, tau=tau) for s in STRATEGIES}
    return choices, _qsef_sweeps(correct, costs, te, p)


def _significance(correct: np.ndarray, costs: np.ndarray, experts: Sequence[str], scores: dict[str, np.ndarray],
                  chosen: np.ndarray, compare_to: Mapping[str, str | None], *, weak_j: int, strong_j: int,
                  n_boot: int = 1000) -> dict[str, object]:
    """Is the routed fleet really better, and how sure is its APGR?

    ``compare_to`` names the single experts to test the routed choices ``chosen`` against (McNemar exact on
    per-question correctness, paired); ``apgr_bootstrap`` holds each sweep's APGR with a 95% bootstrap
    interval (:func:`bootstrap_apgr`), the sweeps rebuilt from ``scores`` on the standard grids.
    """
    rows = np.arange(correct.shape[0])
    te, p = scores["te"], scores["p"]
    sweeps = {
        "qsef_cost_aware": [qsef_choice(te, p, costs, "cost_aware", lam=lm) for lm in LAMBDAS],
        "qsef_threshold": [qsef_choice(te, p, costs, "threshold", tau=t) for t in TAUS],
        "knn": [choose(scores["knn"], costs, lm) for lm in LAMBDAS],
        "learned": [choose(scores["learned"], costs, lm) for lm in LAMBDAS],
    }
    hit = correct[rows, chosen]
    tests = {k: {"expert": x, "test": "McNemar exact, two-sided; a = routed, b = the expert",
                 **mcnemar_exact(hit, correct[:, list(experts).index(x)])} if x else None
             for k, x in compare_to.items()}
    return {**tests, "apgr_bootstrap": {k: bootstrap_apgr(correct, costs, v, weak_j=weak_j, strong_j=strong_j,
                                                          n_boot=n_boot) for k, v in sweeps.items()}}


def evaluate_fleet(correct: np.ndarray, costs: np.ndarray, experts: Sequence[str], domains: Sequence[str],
                   scores: dict[str, np.ndarray], *, default: str = "argmax", lam: float = 0.0,
                   tau: float = 0.34, extra_qsef: Sequence[str] = ()) -> dict[str, object]:
    """The answer-quality report of one fleet over out-of-fold router scores (see :func:`cross_fit`).

    Args:
        extra_qsef: names of more QSEF configurations in ``scores`` (``te_<name>``, ``p_<name>``); each
            is reported like the default one.

    Returns:
        ``{"n", "routed", "experts", "oracle", "random", "apgr", "pgr", "strategies", "baselines",
        "sweeps", "per_domain", "spearman", "targets", "qsef_configs", "significance"}`` — ``routed`` is QSEF with the
        ``default`` strategy (the router's default configuration). ``qsef_configs`` holds, per QSEF
        configuration (``qsef`` and the extra ones), each strategy's outcome, APGR of both sweeps (and
        on the dense grids ``FINE_LAMBDAS`` / ``FINE_TAUS``, ``apgr_fine_grid``: how the configurations
        compare once the fixed grid steps no longer matter), Spearman(P / TE of the chosen expert, it was
        right) per strategy and the cheapest sweep point reaching 90% of the strongest expert; the extra configurations' sweeps also appear in ``sweeps``
        and ``apgr_by_router`` (``<name>_cost_aware``, ``<name>_threshold``).
        ``significance`` (:func:`_significance`): ``routed`` against the best single expert of equal or
        lower mean cost and against the strongest (McNemar exact), and the standard sweeps' APGR with 95%
        bootstrap intervals.
    """
    if default not in STRATEGIES:
        raise ValueError(f"unknown strategy {default!r}; choose from {', '.join(STRATEGIES)}")
    domains = np.asarray(domains)
    costs = np.asarray(costs, dtype=float)
    n = correct.shape[0]
    rows = np.arange(n)
    single = {x: outcome(correct, costs, np.full(n, j)) for j, x in enumerate(experts)}
    acc = np.array([single[x].accuracy for x in experts])
    weak_j, strong_j = int(np.argmin(acc)), int(np.argmax(acc))
    weak = (float(costs[weak_j]), float(acc[weak_j]))
    strong = (float(costs[strong_j]), float(acc[strong_j]))
    configs = {"qsef": (scores["te"], scores["p"]), **{x: (scores[f"te_{x}"], scores[f"p_{x}"]) for x in extra_qsef}}
    per_config = {x: _qsef_config(correct, costs, te, p, lam=lam, tau=tau) for x, (te, p) in configs.items()}
    qsef_choices, qsef_sweeps = per_config["qsef"]
    choices: dict[str, np.ndarray] = {
        **{f"qsef_{s}": c for s, c in qsef_choices.items()},
        "knn": choose(scores["knn"], costs, 0.0),
        "learned": choose(scores["learned"], costs, 0.0),
        "oracle": oracle(correct, costs),
    }
    routed_key = f"qsef_{default}"
    res = {k: outcome(correct, costs, c) for k, c in choices.items()}
    sweeps = {
        "qsef_cost_aware": qsef_sweeps["cost_aware"],
        "qsef_threshold": qsef_sweeps["threshold"],
        "knn": [(lm, outcome(correct, costs, choose(scores["knn"], costs, lm))) for lm in LAMBDAS],
        "learned": [(lm, outcome(correct, costs, choose(scores["learned"], costs, lm))) for lm in LAMBDAS],
    }
    for x in extra_qsef:
        sweeps.update({f"{x}_{s}": v for s, v in per_config[x][1].items()})

    def area(sweep: list[tuple[float, Outcome]]) -> float:
        return apgr([(o.mean_cost, o.accuracy) for _, o in sweep], weak=weak, strong=strong)

    def reach90(sweep: list[tuple[float, Outcome]]) -> dict[str, float] | None:
        """The cheapest operating point of a sweep that reaches 90% of the strongest's accuracy."""
        ok = [(o.mean_cost, par) for par, o in sweep if o.accuracy >= 0.9 * strong[1]]
        return {"cost_fraction_of_strongest": min(ok)[0] / strong[0], "param": min(ok)[1]} if ok else None

    def validity(te: np.ndarray, p: np.ndarray, chosen: np.ndarray) -> dict[str, float]:
        hit = correct[rows, chosen]
        return {"P_vs_chosen_correct": spearman(p[rows, chosen], hit),
                "TE_vs_chosen_correct": spearman(te[rows, chosen], hit)}

    sweep_apgr = {k: area(v) for k, v in sweeps.items()}
    routed = res[routed_key]
    chosen = choices[routed_key]

    def best_single_at(cost: float) -> tuple[str | None, float]:
        ok = [x for x in experts if single[x].mean_cost <= cost + 1e-9]
        if not ok:
            return None, float("nan")
        b = max(ok, key=lambda x: single[x].accuracy)
        return b, single[b].accuracy

    def per_domain(choice: np.ndarray) -> dict[str, dict[str, float]]:
        return {d: outcome(correct[domains == d], costs, choice[domains == d]).to_dict() for d in sorted(set(domains))}

    def beats(o: Outcome) -> dict[str, object]:
        b, ba = best_single_at(o.mean_cost)
        return {"beats_best_single_at_cost_by": o.accuracy - ba if b else None, "best_single": b}

    targets = {name: beats(res[name]) for name in ("qsef_argmax", "qsef_cost_aware", "qsef_threshold", "knn",
                                                    "learned")}
    qsef_configs = {}
    for x, (te, p) in configs.items():
        ch, sw = per_config[x]
        outs = {s: outcome(correct, costs, c) for s, c in ch.items()}
        if x != "qsef":
            targets.update({f"{x}_{s}": beats(o) for s, o in outs.items()})
        qsef_configs[x] = {
            "strategies": {s: o.to_dict() for s, o in outs.items()},
            "pgr": {s: pgr(o.accuracy, weak[1], strong[1]) for s, o in outs.items()},
            "apgr": {s: area(v) for s, v in sw.items()},
            "apgr_fine_grid": {s: area(v) for s, v in _qsef_sweeps(correct, costs, te, p, lambdas=FINE_LAMBDAS,
                                                                    taus=FINE_TAUS).items()},
            "spearman": {s: validity(te, p, c) for s, c in ch.items()},
            "reach_90pct_of_strongest": {s: reach90(v) for s, v in sw.items()},
        }
    reach = {k: reach90(v) for k, v in sweeps.items()}
    significance = _significance(correct, costs, experts, scores, chosen,
                                 {"routed_vs_best_single_at_cost": best_single_at(routed.mean_cost)[0],
                                  "routed_vs_strongest": experts[strong_j]}, weak_j=weak_j, strong_j=strong_j)
    return {
        "n": n,
        "routed": {**routed.to_dict(), "strategy": default, "pgr": pgr(routed.accuracy, weak[1], strong[1])},
        "experts": {x: single[x].to_dict() for x in experts},
        "oracle": res["oracle"].to_dict(),
        "random": random_outcome(correct, costs).to_dict(),
        "apgr": sweep_apgr["qsef_cost_aware"],
        "apgr_by_router": sweep_apgr,
        "weakest": experts[weak_j], "strongest": experts[strong_j],
        "strategies": {k: res[k].to_dict() for k in ("qsef_argmax", "qsef_cost_aware", "qsef_threshold")},
        "baselines": {k: res[k].to_dict() for k in ("knn", "learned")},
        "sweeps": {k: [{"param": par, **o.to_dict()} for par, o in v] for k, v in sweeps.items()},
        "per_domain": {
            "experts": {x: per_domain(np.full(n, j)) for j, x in enumerate(experts)},
            "routed": per_domain(chosen),
            "oracle": per_domain(choices["oracle"]),
            "knn": per_domain(choices["knn"]),
            "learned": per_domain(choices["learned"]),
        },
        "spearman": validity(scores["te"], scores["p"], chosen),
        "targets": {"per_router": targets, "reach_90pct_of_strongest": reach},
        "qsef_configs": qsef_configs,
        "significance": significance,
    }
