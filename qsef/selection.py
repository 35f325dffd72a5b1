"""Choosing experts from TE scores, and pre-filtering candidates when there are many experts.

Strategies (SPEC §2) work on one row of TE values ``(E,)``; each is a function and a small
:class:`SelectionStrategy` class in one resolver, :data:`selection_strategy_resolver` (the router's
``RouteOptions.strategy`` and ``qsef route --strategy`` take its names):

* ``argmax`` (:func:`select_argmax`) — the highest TE;
* ``top_k`` (:func:`select_top_k`) — the K best with TE-proportional weights (for answer mixing);
* ``cost_aware`` (:func:`select_cost_aware`) — the subset maximising ``Σ TE − λ·cost``;
* ``threshold`` (:func:`select_with_threshold`) — argmax, but when the best expert's calibrated share
  ``P = TE / Σ TE`` is under τ the fallback expert answers, flagged low-confidence.

TE's absolute scale follows the fitted weights (``k1``, ``k2``), so τ is compared with P (the row of
``ScoreResult.probabilities()``), not with raw TE — τ then reads as "at least this likely to be the
right expert" and survives recalibration.

:class:`CandidateFilter` keeps a faiss ``IndexFlatIP`` over expert centroids; with more experts than
``min_experts`` only the ``k`` nearest centroids are scored. Flat inner-product search is exact, so the
result equals brute-force top-k (tested).

Example:
    >>> sel = select_with_threshold(result.TE[0], result.names, tau=0.2, fallback="general")
    >>> sel.experts, sel.weights, sel.low_confidence
    (['medicine'], [1.0], False)
    >>> selection_strategy_resolver.make("top_k", k=2).select(result.TE[0], result.names).experts
    ['medicine', 'general']
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from core.resolver import Resolver

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """Chosen experts for one sub-task, with mixing weights summing to 1."""

    experts: list[str]
    weights: list[float]
    strategy: str
    low_confidence: bool = False
    reason: str = ""
    te: list[float] = field(default_factory=list)


def _row(te: np.ndarray, names: Sequence[str]) -> np.ndarray:
    te = np.asarray(te, dtype=np.float64).reshape(-1)
    if te.shape[0] != len(names) or te.shape[0] == 0:
        raise ValueError(f"need one TE per expert: got {te.shape[0]} scores for {len(names)} experts")
    return te


def select_argmax(te: np.ndarray, names: Sequence[str]) -> Selection:
    """The single expert with the highest TE (first one on ties)."""
    te = _row(te, names)
    j = int(np.argmax(te))
    return Selection([names[j]], [1.0], "argmax", te=[float(te[j])])


def select_top_k(te: np.ndarray, names: Sequence[str], k: int = 2) -> Selection:
    """The ``k`` highest-TE experts, weighted ``TE_i / Σ TE``."""
    te = _row(te, names)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    idx = np.argsort(-te, kind="stable")[: min(k, te.shape[0])]
    tot = float(te[idx].sum())
    w = [float(te[j] / tot) if tot > 0 else 1.0 / len(idx) for j in idx]
    return Selection([names[j] for j in idx], w, "top_k", te=[float(te[j]) for j in idx])


def select_cost_aware(te: np.ndarray, names: Sequence[str], costs: Sequence[float], lam: float = 0.1,
                      *, max_experts: int | None = None) -> Selection:
    """Subset S maximising ``Σ_{e∈S} TE_e − λ·cost_e``.

    The objective is additive, so the optimum takes every expert with ``TE − λ·cost > 0`` (at most
    ``max_experts``, best first); if none is positive the single best-margin expert is taken and the
    selection is flagged low-confidence.
    """
    te = _row(te, names)
    costs_a = np.asarray(costs, dtype=np.float64)
    if costs_a.shape != te.shape:
        raise ValueError(f"need one cost per expert: got {costs_a.shape[0]} for {te.shape[0]}")
    margin = te - lam * costs_a
    order = np.argsort(-margin, kind="stable")
    chosen = [j for j in order if margin[j] > 0][: max_experts or len(order)]
    low = not chosen
    if low:
        chosen = [int(order[0])]
    tot = float(te[chosen].sum())
    w = [float(te[j] / tot) if tot > 0 else 1.0 / len(chosen) for j in chosen]
    return Selection([names[j] for j in chosen], w, "cost_aware", low_confidence=low,
                     reason="no expert has TE above λ·cost" if low else "", te=[float(te[j]) for j in chosen])


def choice_probabilities(te: np.ndarray) -> np.ndarray:
    """``P = TE / Σ TE`` over the last axis: the calibrated choice probability of each expert.

    The same share as :meth:`qsef.engine.ScoreResult.probabilities` (which calls this).
    """
    te = np.asarray(te)
    return te / np.maximum(te.sum(axis=-1, keepdims=True), 1e-30)


def select_with_threshold(te: np.ndarray, names: Sequence[str], *, tau: float, fallback: str) -> Selection:
    """Argmax TE; when the best expert's share ``P = TE / Σ TE`` is under ``tau`` the ``fallback``
    expert is chosen and flagged low-confidence.

    Args:
        te: one row of TE values ``(E,)`` over all candidates (P is taken over this row).
        names: the E expert names.
        tau: the threshold on P, in [0, 1].
        fallback: the expert that answers under the threshold.
    """
    best = select_argmax(te, names)
    te_row = _row(te, names)
    p_best = float(choice_probabilities(te_row)[list(names).index(best.experts[0])])
    if p_best >= tau:
        best.strategy = "threshold"
        return best
    log.info("best expert's P under threshold; using fallback expert",
             extra={"best": best.experts[0], "p": round(p_best, 4), "tau": tau, "fallback": fallback})
    fb_te = float(te_row[list(names).index(fallback)]) if fallback in names else float("nan")
    return Selection([fallback], [1.0], "threshold", low_confidence=True,
                     reason=f"best P {p_best:.3f} ({best.experts[0]}) < tau {tau}", te=[fb_te])


class SelectionStrategy(ABC):
    """A selection strategy: one TE row in, a :class:`Selection` out; options go to the constructor.

    ``costs`` (one per expert) is passed by callers that have them; strategies that need none ignore it.
    """

    name: ClassVar[str]

    @abstractmethod
    def select(self, te: np.ndarray, names: Sequence[str], *, costs: Sequence[float] | None = None) -> Selection:
        """The chosen experts for one row of TE values ``(E,)``."""


class ArgmaxSelection(SelectionStrategy):
    """The single highest-TE expert (:func:`select_argmax`)."""

    name = "argmax"

    def select(self, te, names, *, costs=None) -> Selection:
        return select_argmax(te, names)


class TopKSelection(SelectionStrategy):
    """The ``k`` highest-TE experts, TE-proportional weights (:func:`select_top_k`)."""

    name = "top_k"

    def __init__(self, k: int = 2) -> None:
        self.k = k

    def select(self, te, names, *, costs=None) -> Selection:
        return select_top_k(te, names, k=self.k)


class CostAwareSelection(SelectionStrategy):
    """The subset maximising ``Σ TE − λ·cost``, at most ``max_experts`` (:func:`select_cost_aware`)."""

    name = "cost_aware"

    def __init__(self, lam: float = 0.1, max_experts: int | None = None) -> None:
        self.lam, self.max_experts = lam, max_experts

    def select(self, te, names, *, costs=None) -> Selection:
        if costs is None:
            raise ValueError("cost_aware selection needs one cost per expert")
        return select_cost_aware(te, names, costs, lam=self.lam, max_experts=self.max_experts)


class ThresholdSelection(SelectionStrategy):
    """Argmax, with the ``fallback`` expert when the best P is under ``tau`` (:func:`select_with_threshold`)."""

    name = "threshold"

    def __init__(self, tau: float = 0.5, fallback: str = "general") -> None:
        self.tau, self.fallback = tau, fallback

    def select(self, te, names, *, costs=None) -> Selection:
        return select_with_threshold(te, names, tau=self.tau, fallback=self.fallback)


#: The one definition of the selection strategies (CLI choices and request validation use it).
selection_strategy_resolver: Resolver[SelectionStrategy] = Resolver(
    SelectionStrategy, [ArgmaxSelection, TopKSelection, CostAwareSelection, ThresholdSelection],
    suffix="selection", default="argmax", kind="selection strategy")


class CandidateFilter:
    """Exact inner-product pre-filter over expert centroids (faiss ``IndexFlatIP``).

    Args:
        centroids: ``(E, dim)`` unit vectors.
        min_experts: below this many experts :meth:`candidates` returns all of them (no search needed).
    """

    def __init__(self, centroids: np.ndarray, *, min_experts: int = 64) -> None:
        import faiss

        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.min_experts = min_experts
        self.index = faiss.IndexFlatIP(self.centroids.shape[1])
        self.index.add(self.centroids)

    def __len__(self) -> int:
        return self.centroids.shape[0]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` centroids by inner product: ``(scores (T, k), indices (T, k))``."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.search(q, min(k, len(self)))

    def candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Sorted union of the top-``k`` expert indices over the query rows (all experts when few)."""
        if len(self) <= max(self.min_experts, k):
            return np.arange(len(self))
        _, idx = self.search(queries, k)
        return np.unique(idx[idx >= 0])


def brute_force_top_k(centroids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k by a dense product (what :class:`CandidateFilter` must equal)."""
    sims = np.atleast_2d(queries).astype(np.float32) @ centroids.astype(np.float32).T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, axis=1), idx
