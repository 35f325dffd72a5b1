"""Calibration: fit QSEF's few weights as a conditional-logit model over experts.

``log TE(t, e) = -(Σ_c β_c · x_c(t, e))`` with ``β_d_emb = k1·w1``, ``β_d_kg = k1·w2``,
``β_c_model = k2·w_m``, ``β_c_sparsity = k2·w_s`` (``C_data`` is the same for every expert, so it cancels
in the choice and keeps its prior weight). Treating TE as the utility of a choice among experts gives

    P(e | t) = TE(t, e) / Σ_e' TE(t, e')

and the β are fitted by maximum likelihood with non-negative bounds (a distance never *raises* TE) and a
small L2 penalty, k-fold cross-validated, on one of two kinds of data:

* ``kind: "labels"`` — labelled routing rows ``{"text", "domain"}``: the correct expert is the one whose
  ``domain`` matches (:func:`calibrate`). The file shipped in ``qsef/data/calibration.json`` is of this
  kind and is what the engine loads by default (``qsef route``, ``qsef score``, and the ``qsef`` router of
  ``qsef eval answers``).
* ``kind: "answers"`` — an answer matrix (questions × experts, *did this expert answer correctly*):
  ``C_model``'s history is the measured correctness of each expert on similar past questions
  (:class:`qsef.history.AnswerHistory`, built from the training questions only, never a question's own
  answers) and the β maximise the likelihood of the set of experts that answered correctly
  (:func:`fit_outcome_logit`, :func:`calibrate_answers`). The two answer different questions ("which
  domain is this?" vs "which expert will be right?"), so an answers fit is saved to its own file and never
  replaces the shipped label calibration (:func:`save_calibration` refuses to).

Example:
    >>> feats = feature_tensor(engine.component_values(ctx))    # (N, E, F)
    >>> fit = fit_conditional_logit(feats.values, labels, feats.names)
    >>> fit.weights                                             # QSEFWeights
    >>> fit = calibrate_answers(engine, texts, emb, correct, profiles, out="calibration-answers.json")
    >>> fit.cv["accuracy"], fit.cv["baseline"]["accuracy"]       # held-out, refitted vs current weights
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qsef.components import DataComplexity, ScoringContext
from qsef.engine import DEFAULT_CALIBRATION, QSEFWeights

CALIBRATION_FORMAT = 1
FITTED = ("d_emb", "d_kg", "c_model", "c_sparsity")
#: What a calibration was fitted on: labelled routing rows, or measured answer outcomes.
CALIBRATION_KINDS = ("labels", "answers")
#: A component whose values differ by less than this between the experts of every question cancels from P.
_SPREAD_TOL = 1e-6


@dataclass
class FeatureTensor:
    """Component values for N texts × E experts: ``values (N, E, F)`` in ``names`` order."""

    values: np.ndarray
    names: list[str]


def feature_tensor(values: dict[str, np.ndarray], names: Sequence[str] = FITTED) -> FeatureTensor:
    """Stack component matrices ``{name: (N, E)}`` into ``(N, E, F)``; missing components are skipped."""
    keep = [n for n in names if n in values]
    return FeatureTensor(np.stack([values[n] for n in keep], axis=-1).astype(np.float64), keep)


def _set_nll_grad(beta: np.ndarray, x: np.ndarray, target: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Mean ``-log Σ_{e ∈ S_n} P(e | t_n)`` over the rows, plus ``l2/2·|β|²``, and its gradient in β.

    ``x (N, E, F)``; ``target (N, E)`` bool, the set S_n of each row (at least one True). With one True per
    row this is the ordinary conditional-logit NLL. With ``r`` = P renormalised over S_n,
    ``d/dβ = Σ_e (r_e − p_e)·x_e`` (because logits = −x·β); log-sum-exp throughout, so a tiny P(S_n) does
    not underflow.
    """
    logits = -(x @ beta)  # (N, E)
    logits = logits - logits.max(axis=1, keepdims=True)
    masked = np.where(target, logits, -np.inf)
    top = masked.max(axis=1, keepdims=True)  # finite: every row has a target
    q = np.where(target, np.exp(masked - top), 0.0)
    p = np.exp(logits)
    z, zs = p.sum(axis=1), q.sum(axis=1)
    log_ps = top[:, 0] + np.log(zs) - np.log(z)  # log Σ_{S_n} p
    n = x.shape[0]
    nll = -log_ps.sum() / n + 0.5 * l2 * float(beta @ beta)
    grad = np.einsum("ne,nef->nf", q / zs[:, None] - p / z[:, None], x).sum(axis=0) / n + l2 * beta
    return float(nll), grad


def _nll_grad(beta: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """The label fit's NLL: :func:`_set_nll_grad` with the one correct expert ``y (N,)`` per row."""
    target = np.zeros(x.shape[:2], dtype=bool)
    target[np.arange(x.shape[0]), y] = True
    return _set_nll_grad(beta, x, target, l2)


@dataclass
class LogitFit:
    """A fitted conditional logit."""

    beta: dict[str, float]
    nll: float
    accuracy: float
    weights: QSEFWeights
    cv: dict[str, Any] = field(default_factory=dict)
    kind: str = "labels"  # one of CALIBRATION_KINDS
    identified: list[str] | None = None  # answers fit: the coefficients the data could move (the rest: prior)
    counts: dict[str, int] = field(default_factory=dict)  # answers fit: questions used / left out, and why


def fit_conditional_logit(x: np.ndarray, y: np.ndarray, names: Sequence[str], *, l2: float = 1e-3,
                          w_d: float = 0.2, max_beta: float = 200.0) -> LogitFit:
    """Maximum-likelihood β ≥ 0 for ``P(y | x) ∝ exp(-x·β)``.

    Args:
        x: ``(N, E, F)`` component values; y: ``(N,)`` index of the correct expert.
        names: the F component names.
        l2: ridge penalty on β.
        w_d: prior weight of ``C_data`` in R (not identifiable from choices).

    Returns:
        :class:`LogitFit` with the β, training NLL/accuracy and the equivalent :class:`QSEFWeights`.
    """
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    f = x.shape[-1]
    res = minimize(_nll_grad, x0=np.ones(f), args=(x, y, l2), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, max_beta)] * f)
    beta = res.x
    acc = float((np.argmin(x @ beta, axis=1) == y).mean())
    bd = dict(zip(names, map(float, beta), strict=True))
    return LogitFit(beta=bd, nll=float(res.fun), accuracy=acc, weights=QSEFWeights.from_coefficients(bd, w_d=w_d))


def kfold_indices(n: int, k: int = 5, *, seed: int = 0, labels: np.ndarray | None = None) -> list[np.ndarray]:
    """``k`` disjoint test-index arrays covering ``range(n)``; stratified by ``labels`` when given."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == v) for v in np.unique(labels)]
    offset = 0
    for g in groups:
        g = rng.permutation(g)
        for i, idx in enumerate(g):
            folds[(i + offset) % k].append(int(idx))
        offset += len(g)
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def cross_validate(x: np.ndarray, y: np.ndarray, names: Sequence[str], *, k: int = 5, seed: int = 0,
                   **fit_kwargs: Any) -> dict[str, Any]:
    """k-fold CV of the conditional logit: held-out accuracy and NLL per fold and their means."""
    accs, nlls = [], []
    for test in kfold_indices(len(y), k, seed=seed, labels=y):
        train = np.setdiff1d(np.arange(len(y)), test)
        fit = fit_conditional_logit(x[train], y[train], names, **fit_kwargs)
        b = np.array([fit.beta[n] for n in names])
        accs.append(float((np.argmin(x[test] @ b, axis=1) == y[test]).mean()))
        nlls.append(_nll_grad(b, x[test], y[test], 0.0)[0])
    return {"k": k, "seed": seed, "accuracy": float(np.mean(accs)), "accuracy_folds": accs,
            "nll": float(np.mean(nlls)), "nll_folds": nlls}


def next_version(path: Path) -> str:
    """``YYYY.MM.DD-N``: today's date and a counter above the file's current version of the same day."""
    today = _dt.date.today().strftime("%Y.%m.%d")
    n = 1
    if path.is_file():
        old = json.loads(path.read_text()).get("version", "")
        if old.startswith(today + "-"):
            n = int(old.rsplit("-", 1)[1]) + 1
    return f"{today}-{n}"


_MODELS = {
    "labels": "conditional-logit over experts, beta >= 0, L2",
    "answers": "conditional logit over experts, likelihood of the set of experts that answered correctly, "
               "beta >= 0, L2; coefficients the answers cannot identify kept at the prior",
}


def save_calibration(fit: LogitFit, path: str | Path = DEFAULT_CALIBRATION, *, data: dict[str, Any] | None = None,
                     note: str = "") -> Path:
    """Write a versioned calibration file (JSON) the engine can load with ``QSEFWeights.load``.

    Raises:
        ValueError: for an unknown ``fit.kind``, or an ``"answers"`` fit aimed at the shipped label
            calibration ``qsef/data/calibration.json``.
    """
    path = Path(path)
    if fit.kind not in CALIBRATION_KINDS:
        raise ValueError(f"unknown calibration kind {fit.kind!r}; expected one of {', '.join(CALIBRATION_KINDS)}")
    if fit.kind != "labels" and path.resolve() == DEFAULT_CALIBRATION.resolve():
        raise ValueError(f"{path} is the shipped label calibration; an {fit.kind!r} fit answers another question "
                         "and is written to its own file")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": CALIBRATION_FORMAT,
        "kind": fit.kind,
        "version": next_version(path),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": _MODELS[fit.kind],
        "weights": asdict(fit.weights),
        "coefficients": fit.beta,
        "train": {"nll": fit.nll, "accuracy": fit.accuracy},
        "cv": fit.cv,
        "data": data or {},
        "machine": platform.node() or "unknown",
        "note": note,
    }
    if fit.identified is not None:
        doc["identified"] = list(fit.identified)
    if fit.counts:
        doc["counts"] = dict(fit.counts)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_calibration(path: str | Path = DEFAULT_CALIBRATION, *, kind: str | None = None) -> dict[str, Any]:
    """The calibration document; a file written before kinds existed is of kind ``"labels"``.

    Raises:
        ValueError: on an unknown format, or when ``kind`` is given and the file is of another kind.
    """
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != CALIBRATION_FORMAT:
        raise ValueError(f"calibration file {path} has format {doc.get('format')!r}, expected {CALIBRATION_FORMAT}")
    doc.setdefault("kind", "labels")
    if kind is not None and doc["kind"] != kind:
        raise ValueError(f"calibration file {path} is of kind {doc['kind']!r}, expected {kind!r}")
    return doc


def calibrate(engine: Any, rows: Sequence[dict[str, str]], *, k: int = 5, seed: int = 0,
              out: str | Path | None = None, embeddings: np.ndarray | None = None,
              **fit_kwargs: Any) -> LogitFit:
    """Fit the engine's weights on labelled rows ``{"text", "domain"}``; optionally save to ``out``.

    Rows whose domain no expert has are rejected (``ValueError`` naming the known domains).
    """
    from qsef.components import ScoringContext

    experts = engine.experts
    domains = [e.domain for e in experts]
    unknown = sorted({r["domain"] for r in rows} - set(domains))
    if unknown:
        raise ValueError(f"rows use domains {unknown} that no expert has; experts cover {sorted(set(domains))}")
    texts = [r["text"] for r in rows]
    y = np.array([domains.index(r["domain"]) for r in rows])
    emb = engine.encode(texts) if embeddings is None else embeddings
    ctx = ScoringContext(texts=texts, embeddings=emb, experts=experts, kg=engine.kg, history=engine.history)
    ft = feature_tensor(engine.component_values(ctx))
    fit = fit_conditional_logit(ft.values, y, ft.names, **fit_kwargs)
    fit.cv = cross_validate(ft.values, y, ft.names, k=k, seed=seed, **fit_kwargs)
    if out is not None:
        from qsef.encoder import texts_digest

        save_calibration(fit, out, data={"n": len(rows), "sha256": texts_digest(texts), "components": ft.names})
    return fit


# ---------------------------------------------------------------------------------------------
# Calibration on answer outcomes (kind "answers")
# ---------------------------------------------------------------------------------------------
def fit_outcome_logit(x: np.ndarray, correct: np.ndarray, names: Sequence[str], *,
                      prior: Mapping[str, float] | None = None, l2: float = 1e-3, max_beta: float = 200.0,
                      w_d: float | None = None) -> LogitFit:
    """Maximum-likelihood β ≥ 0 for ``P(e | t) ∝ exp(-x·β)`` from which experts answered correctly.

    The objective is the log-likelihood of the *set* of experts that were right,
    ``mean_n log Σ_{e correct on n} P(e | t_n)`` — the chance that an expert drawn from P answers
    correctly — over the questions at least one expert got right. Why this and not the alternatives:

    * one "correct expert" per question, as in the label fit, does not exist: several experts are often
      right, and picking one of them (say the cheapest) would teach P a cost preference, not correctness;
    * soft targets (each right expert weighted ``1/|S|``) pull P toward *uniform* over the right experts
      and penalise confidence in any one of them, although each is an equally good pick;
    * the set likelihood is indifferent among the right experts and only asks P to put its mass on them.
      A question every expert got right adds ``log 1 = 0``; one nobody got right says nothing about which
      expert is better and is left out (both counted in ``counts``).

    Cost is not a term: P keeps meaning "routing here gives a right answer"; cost is traded at selection
    time (``cost_aware``, ``threshold``).

    Only the coefficients of components that differ between the experts of some informative question
    are identified — a component equal for every expert of a question cancels from P (for a fleet of one
    domain and several model sizes, only ``C_model`` differs). The others keep their ``prior`` value, and
    so does ``C_data``'s coefficient (``w_d`` is set so that ``k2·w_d`` equals the prior's ``c_data``), so
    TE's scale moves only where the answers say so.

    Args:
        x: ``(N, E, F)`` component values; correct: ``(N, E)`` bool, expert e answered question n rightly.
        names: the F component names.
        prior: coefficients (``QSEFWeights.coefficients()``, e.g. the current calibration's) for what
            the answers cannot identify; missing names count 0.
        l2: ridge penalty on the identified β.
        w_d: C_data's share of R (default: from ``prior["c_data"]``, else 0.2).

    Returns:
        :class:`LogitFit` of kind ``"answers"``: the β, the training NLL (identified part, with the
        penalty), ``accuracy`` = share of all N questions whose highest-P expert was right, ``identified``
        and ``counts`` (``n``, ``used``, ``no_correct``, ``all_correct``).

    Raises:
        ValueError: on shapes that do not match, fewer than two experts, non-finite values, no question
            any expert got right, or no component that differs between experts where it matters.
    """
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=np.float64)
    correct = np.asarray(correct)
    if x.ndim != 3:
        raise ValueError(f"x must be (N, E, F), got shape {x.shape}")
    if correct.shape != x.shape[:2]:
        raise ValueError(f"correct must be (N, E) = {x.shape[:2]}, got {correct.shape}")
    if correct.dtype != bool and not np.isin(correct, (0, 1)).all():
        raise ValueError("correct must hold booleans (or 0/1)")
    correct = correct.astype(bool)
    if len(names) != x.shape[2]:
        raise ValueError(f"{len(names)} names for {x.shape[2]} features")
    if x.shape[1] < 2:
        raise ValueError(f"an outcome fit needs at least 2 experts, got {x.shape[1]}")
    if not np.isfinite(x).all():
        raise ValueError("x holds non-finite component values")
    used = correct.any(axis=1)
    if not used.any():
        raise ValueError(f"none of the {len(x)} questions was answered correctly by any expert: nothing to fit")
    informative = used & ~correct.all(axis=1)
    spread = (x.max(axis=1) - x.min(axis=1))[informative]  # (N_inf, F)
    free = (spread > _SPREAD_TOL).any(axis=0) if informative.any() else np.zeros(len(names), dtype=bool)
    if not free.any():
        why = ("every question was answered alike by all experts" if not informative.any()
               else "no component differs between the experts")
        raise ValueError(f"the answers cannot identify any coefficient: {why}")
    prior = dict(prior or {})
    xs, ts = x[used][:, :, free], correct[used]
    f = int(free.sum())
    res = minimize(_set_nll_grad, x0=np.ones(f), args=(xs, ts, l2), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, max_beta)] * f)
    beta = np.array([float(prior.get(n, 0.0)) for n in names])
    beta[free] = res.x
    bd = dict(zip(names, map(float, beta), strict=True))
    if w_d is None:
        cd = float(prior.get("c_data", 0.0))
        rest = bd.get("c_model", 0.0) + bd.get("c_sparsity", 0.0)
        w_d = cd / (cd + rest) if "c_data" in prior and cd + rest > 0 else 0.2
    acc = float(correct[np.arange(len(x)), np.argmin(x @ beta, axis=1)].mean())
    counts = {"n": len(x), "used": int(used.sum()), "no_correct": int((~used).sum()),
              "all_correct": int(correct.all(axis=1).sum())}
    return LogitFit(beta=bd, nll=float(res.fun), accuracy=acc, weights=QSEFWeights.from_coefficients(bd, w_d=w_d),
                    kind="answers", identified=[n for n, k in zip(names, free, strict=True) if k], counts=counts)


def outcome_metrics(x: np.ndarray, correct: np.ndarray, beta: np.ndarray) -> dict[str, float]:
    """How coefficients ``beta (F,)`` route questions ``x (N, E, F)`` with outcomes ``correct (N, E)``.

    Returns:
        ``{"n", "nll", "accuracy", "p_spearman"}``: the set NLL over questions some expert got right,
        the share of all questions whose highest-P expert was right, and Spearman(P of that expert, it was
        right) — NaN when either side is constant.
    """
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    beta = np.asarray(beta, dtype=np.float64)
    used = correct.any(axis=1)
    nll = _set_nll_grad(beta, x[used], correct[used], 0.0)[0] if used.any() else float("nan")
    logits = -(x @ beta)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(x))
    best = np.argmax(p, axis=1)
    hit, p_best = correct[rows, best].astype(float), p[rows, best]
    constant = len(x) < 2 or np.ptp(hit) == 0 or np.ptp(p_best) == 0
    rho = float("nan") if constant else float(spearmanr(p_best, hit).statistic)
    return {"n": len(x), "nll": float(nll), "accuracy": float(hit.mean()) if len(x) else float("nan"),
            "p_spearman": rho}


def te_matrix(values: Mapping[str, np.ndarray], weights: QSEFWeights) -> np.ndarray:
    """``TE = exp(-Σ_c coefficient_c · value_c)`` over the components present: what
    :meth:`qsef.engine.QSEFEngine.combine` computes, from component matrices ``{name: (T, E)}``."""
    coef = weights.coefficients()
    first = next(iter(values.values()))
    s = np.zeros(np.shape(first), dtype=np.float64)
    for name, v in values.items():
        s += coef.get(name, 0.0) * np.asarray(v, dtype=np.float64)
    return np.exp(-s)


class AnswerFeatures:
    """QSEF's component values for N answered questions × E experts, ``C_model``'s history chosen per call.

    ``C_model`` is the only component that reads history; the others are computed once, on construction.
    :meth:`values` scores some questions with an :class:`qsef.history.AnswerHistory` built from others'
    answers, so a question's own answers never inform its ``C_model``.

    Args:
        engine: the :class:`qsef.engine.QSEFEngine` whose components (and ablations) are used.
        texts: the N questions; embeddings: ``(N, dim)`` unit vectors.
        correct: ``(N, E)`` bool answer matrix, columns in ``experts`` order.
        experts: the E expert profiles.
        labels: ``(N,)`` strata for the folds (e.g. domains); ``None``: unstratified.
        history_kwargs: keyword arguments of :class:`~qsef.history.AnswerHistory` (default: its defaults,
            what ``router.answers.qsef_fold_scorer`` uses).

    Example:
        >>> feats = AnswerFeatures(engine, texts, emb, correct, profiles)
        >>> feats.tensor(train, test).values       # (len(test), E, F), C_model from train's answers
        >>> feats.out_of_fold(train, k=5).values   # (len(train), E, F), each row's history = other folds
    """

    def __init__(self, engine: Any, texts: Sequence[str], embeddings: np.ndarray, correct: np.ndarray,
                 experts: Sequence[Any], *, labels: Sequence[str] | None = None,
                 history_kwargs: Mapping[str, Any] | None = None) -> None:
        self.engine = engine
        self.texts = list(texts)
        self.emb = np.asarray(embeddings, dtype=np.float32)
        self.correct = np.asarray(correct, dtype=bool)
        self.experts = list(experts)
        n = len(self.texts)
        if self.emb.shape[0] != n or self.correct.shape != (n, len(self.experts)):
            raise ValueError(f"{n} texts, {self.emb.shape[0]} embeddings and correct {self.correct.shape} "
                             f"for {len(self.experts)} experts do not match")
        self.labels = None if labels is None else np.asarray(labels)
        self.history_kwargs = dict(history_kwargs or {})
        ctx = self._context(np.arange(n), None)
        self.static = engine.component_values(ctx, ablate=["c_model"])
        # C_model reads C_data's column from the context cache: computed once here, handed to every fold
        self._cdata = DataComplexity().column(ctx)
        enabled = {c.name for c in engine.components} - set(engine.ablate)
        self._others = sorted(enabled - {"c_model"})
        self.model_on = "c_model" in enabled

    def _context(self, idx: np.ndarray, history: Any) -> ScoringContext:
        ctx = ScoringContext(texts=[self.texts[i] for i in idx], embeddings=self.emb[idx], experts=self.experts,
                             kg=self.engine.kg, history=history, settings=self.engine.settings)
        if history is not None:
            ctx.cache["c_data"] = self._cdata[idx]
        return ctx

    def history(self, idx: np.ndarray) -> Any:
        """The :class:`~qsef.history.AnswerHistory` of questions ``idx``."""
        from qsef.history import AnswerHistory

        idx = np.asarray(idx, dtype=np.int64)
        return AnswerHistory(self.emb[idx], self.correct[idx], [e.name for e in self.experts], **self.history_kwargs)

    def values(self, history_idx: np.ndarray, score_idx: np.ndarray) -> dict[str, np.ndarray]:
        """Component matrices ``{name: (len(score_idx), E)}`` of questions ``score_idx``, ``C_model`` with
        the answers of ``history_idx`` as history (the caller keeps the two apart)."""
        score_idx = np.asarray(score_idx, dtype=np.int64)
        out = {k: v[score_idx] for k, v in self.static.items()}
        if self.model_on:
            ctx = self._context(score_idx, self.history(history_idx))
            out["c_model"] = self.engine.component_values(ctx, ablate=self._others)["c_model"]
        return out

    def tensor(self, history_idx: np.ndarray, score_idx: np.ndarray, names: Sequence[str] = FITTED) -> FeatureTensor:
        """:meth:`values` stacked as ``(len(score_idx), E, F)``."""
        return feature_tensor(self.values(history_idx, score_idx), names)

    def out_of_fold(self, idx: np.ndarray, *, k: int = 5, seed: int = 0, names: Sequence[str] = FITTED) -> FeatureTensor:
        """Features of questions ``idx`` where each one's history is the other ``k - 1`` folds of ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        parts = kfold_indices(len(idx), k, seed=seed, labels=None if self.labels is None else self.labels[idx])
        values: np.ndarray | None = None
        kept: list[str] = []
        for part in parts:
            if len(part) == 0:
                continue
            ft = self.tensor(idx[np.setdiff1d(np.arange(len(idx)), part)], idx[part], names)
            if values is None:
                values = np.zeros((len(idx), *ft.values.shape[1:]))
                kept = ft.names
            values[part] = ft.values
        assert values is not None  # idx is not empty
        return FeatureTensor(values, kept)


def fit_answers(features: AnswerFeatures, train: np.ndarray, *, k: int = 5, seed: int = 0,
                prior: Mapping[str, float] | None = None, **fit_kwargs: Any) -> LogitFit:
    """:func:`fit_outcome_logit` on questions ``train``, their ``C_model`` from out-of-fold history
    (:meth:`AnswerFeatures.out_of_fold`: each question's own answers never inform its features)."""
    train = np.asarray(train, dtype=np.int64)
    ft = features.out_of_fold(train, k=k, seed=seed)
    return fit_outcome_logit(ft.values, features.correct[train], ft.names, prior=prior, **fit_kwargs)


def refit_scores(features: AnswerFeatures, train: np.ndarray, test: np.ndarray, *, k: int = 5, seed: int = 0,
                 prior: Mapping[str, float] | None = None,
                 **fit_kwargs: Any) -> tuple[np.ndarray, np.ndarray, LogitFit]:
    """Cross-fitted refit scores of one fold: weights fitted on ``train`` (:func:`fit_answers`), then
    ``test`` scored with ``train``'s answers as history.

    Returns:
        ``(TE, P, fit)`` with TE and P ``(len(test), E)``.
    """
    fit = fit_answers(features, train, k=k, seed=seed, prior=prior, **fit_kwargs)
    te = te_matrix(features.values(train, test), fit.weights)
    return te, te / te.sum(axis=1, keepdims=True), fit


def cross_validate_answers(features: AnswerFeatures, *, k: int = 5, seed: int = 0,
                           prior: Mapping[str, float] | None = None, baseline: QSEFWeights | None = None,
                           **fit_kwargs: Any) -> dict[str, Any]:
    """Nested k-fold CV of the outcome fit: per outer fold, β fitted on the other folds (their features
    out-of-fold, :func:`fit_answers`) and the fold scored with their answers as history.

    Returns:
        ``{"k", "seed", "nll", "nll_folds", "accuracy", "p_spearman", "coefficients_folds"}`` — NLL per
        fold and its mean, accuracy and Spearman(P, right) pooled over the out-of-fold questions — and,
        with ``baseline`` weights, the same metrics of those weights on the same features (``"baseline"``).
    """
    n, e = features.correct.shape
    base = baseline.coefficients() if baseline is not None else None
    score = np.zeros((n, e))  # out-of-fold -log TE (up to a per-question constant) of the refit
    base_score = np.zeros((n, e))
    nlls, base_nlls, betas = [], [], []
    for test in kfold_indices(n, k, seed=seed, labels=features.labels):
        if len(test) == 0:
            continue
        train = np.setdiff1d(np.arange(n), test)
        fit = fit_answers(features, train, k=k, seed=seed, prior=prior, **fit_kwargs)
        ft = features.tensor(train, test)
        b = np.array([fit.beta[c] for c in ft.names])
        score[test] = ft.values @ b
        nlls.append(outcome_metrics(ft.values, features.correct[test], b)["nll"])
        betas.append(fit.beta)
        if base is not None:
            bb = np.array([base.get(c, 0.0) for c in ft.names])
            base_score[test] = ft.values @ bb
            base_nlls.append(outcome_metrics(ft.values, features.correct[test], bb)["nll"])
    # pooled over every question's out-of-fold score, as one "feature" with coefficient 1
    pooled = outcome_metrics(score[:, :, None], features.correct, np.ones(1))
    out: dict[str, Any] = {"k": k, "seed": seed, "nll": float(np.nanmean(nlls)), "nll_folds": nlls,
                           "accuracy": pooled["accuracy"], "p_spearman": pooled["p_spearman"],
                           "coefficients_folds": betas}
    if base is not None:
        b = outcome_metrics(base_score[:, :, None], features.correct, np.ones(1))
        out["baseline"] = {"nll": float(np.nanmean(base_nlls)), "nll_folds": base_nlls,
                           "accuracy": b["accuracy"], "p_spearman": b["p_spearman"]}
    return out


def calibrate_answers(engine: Any, texts: Sequence[str], embeddings: np.ndarray, correct: np.ndarray,
                      experts: Sequence[Any], *, k: int = 5, seed: int = 0, labels: Sequence[str] | None = None,
                      out: str | Path | None = None, data: Mapping[str, Any] | None = None, note: str = "",
                      **fit_kwargs: Any) -> LogitFit:
    """Fit QSEF's weights on answer outcomes; optionally save them as a calibration of kind ``"answers"``.

    The final β are fitted on all questions with out-of-fold ``C_model`` history; ``fit.cv`` is the nested
    cross-validation (:func:`cross_validate_answers`) with the engine's current weights (those it scores
    with once a history is plugged in) as the baseline, and the same weights are the prior of the
    coefficients the answers cannot identify.

    Args:
        engine: the :class:`qsef.engine.QSEFEngine` whose components score the questions.
        texts, embeddings, correct, experts, labels: see :class:`AnswerFeatures`.
        k: folds (outer and inner); at least 2, with at least ``2·k`` questions.
        out: the file to write (never the shipped label calibration).
        data: extra provenance recorded in the file's ``data``.

    Raises:
        ValueError: on too few questions or folds, and whatever :func:`fit_outcome_logit` raises.
    """
    from qsef.encoder import texts_digest

    if k < 2:
        raise ValueError(f"k must be at least 2 (cross-validation), got {k}")
    if len(texts) < 2 * k:
        raise ValueError(f"{len(texts)} questions are too few for {k}-fold cross-validation; need at least {2 * k}")
    features = AnswerFeatures(engine, texts, embeddings, correct, experts, labels=labels)
    baseline = engine.weights_for(history=True)
    prior = baseline.coefficients()
    fit = fit_answers(features, np.arange(len(texts)), k=k, seed=seed, prior=prior, **fit_kwargs)
    fit.cv = cross_validate_answers(features, k=k, seed=seed, prior=prior, baseline=baseline, **fit_kwargs)
    if out is not None:
        save_calibration(fit, out, note=note, data={
            "n": len(texts), "sha256": texts_digest(list(texts)), "components": list(FITTED),
            "experts": [e.name for e in experts], "history": "AnswerHistory of the other folds' answers",
            "prior": "the engine's calibration with history", **(data or {})})
    return fit
