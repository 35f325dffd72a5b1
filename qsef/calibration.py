"""Calibration: fit QSEF's few weights as a conditional-logit model over experts.

``log TE(t, e) = -(Σ_c β_c · x_c(t, e))`` with ``β_d_emb = k1·w1``, ``β_d_kg = k1·w2``,
``β_c_model = k2·w_m``, ``β_c_sparsity = k2·w_s`` (``C_data`` is the same for every expert, so it cancels
in the choice and keeps its prior weight). Treating TE as the utility of a choice among experts gives

    P(e | t) = TE(t, e) / Σ_e' TE(t, e')

and the β are fitted by maximum likelihood on labelled routing rows ``{"text", "domain"}`` (the correct
expert is the one whose ``domain`` matches), with non-negative bounds (a distance never *raises* TE)
and a small L2 penalty, k-fold cross-validated. The result is a versioned JSON file; the one shipped
in ``qsef/data/calibration.json`` is the default the engine loads.

Example:
    >>> feats = feature_tensor(engine, texts, experts)          # (N, E, F)
    >>> fit = fit_conditional_logit(feats.values, labels, feats.names)
    >>> fit.weights                                             # QSEFWeights
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qsef.engine import DEFAULT_CALIBRATION, QSEFWeights

CALIBRATION_FORMAT = 1
FITTED = ("d_emb", "d_kg", "c_model", "c_sparsity")


@dataclass
class FeatureTensor:
    """Component values for N texts × E experts: ``values (N, E, F)`` in ``names`` order."""

    values: np.ndarray
    names: list[str]


def feature_tensor(values: dict[str, np.ndarray], names: Sequence[str] = FITTED) -> FeatureTensor:
    """Stack component matrices ``{name: (N, E)}`` into ``(N, E, F)``; missing components are skipped."""
    keep = [n for n in names if n in values]
    return FeatureTensor(np.stack([values[n] for n in keep], axis=-1).astype(np.float64), keep)


def _nll_grad(beta: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    logits = -(x @ beta)  # (N, E)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = x.shape[0]
    rows = np.arange(n)
    nll = -np.log(np.maximum(p[rows, y], 1e-300)).sum() / n + 0.5 * l2 * float(beta @ beta)
    # d(-log p_y)/dβ = x_y - Σ_e p_e x_e   (because logits = -x·β)
    grad = (x[rows, y] - np.einsum("ne,nef->nf", p, x)).sum(axis=0) / n + l2 * beta
    return float(nll), grad


@dataclass
class LogitFit:
    """A fitted conditional logit."""

    beta: dict[str, float]
    nll: float
    accuracy: float
    weights: QSEFWeights
    cv: dict[str, Any] = field(default_factory=dict)


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


def save_calibration(fit: LogitFit, path: str | Path = DEFAULT_CALIBRATION, *, data: dict[str, Any] | None = None,
                     note: str = "") -> Path:
    """Write a versioned calibration file (JSON) the engine can load with ``QSEFWeights.load``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": CALIBRATION_FORMAT,
        "version": next_version(path),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": "conditional-logit over experts, beta >= 0, L2",
        "weights": asdict(fit.weights),
        "coefficients": fit.beta,
        "train": {"nll": fit.nll, "accuracy": fit.accuracy},
        "cv": fit.cv,
        "data": data or {},
        "machine": platform.node() or "unknown",
        "note": note,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_calibration(path: str | Path = DEFAULT_CALIBRATION) -> dict[str, Any]:
    """The calibration document (raises ``ValueError`` on an unknown format)."""
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != CALIBRATION_FORMAT:
        raise ValueError(f"calibration file {path} has format {doc.get('format')!r}, expected {CALIBRATION_FORMAT}")
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
