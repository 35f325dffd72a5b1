"""Multi-teacher aggregation operators on probabilities (seed 004).

An operator maps K teacher distributions ``probs`` (K, ..., V) and teacher weights ``weights`` (K,)
(non-negative, normalised inside) to one distribution (..., V). Each teacher is first softened at
temperature T, ``tau_T(p) ∝ p^(1/T)`` (the probability-domain form of dividing logits by T).

Axioms (checked by property tests in ``tests/distill/test_teacher_aggregation.py``):

* convexity: arithmetic and confidence-weighted results lie in the convex hull of the teachers
  (per class between the smallest and largest teacher probability); geometric pooling is convex in
  log space (``log A + log Z`` is a convex combination of the teachers' log-probabilities);
* positivity: positive teachers give a positive result; the result is a distribution;
* continuity in the teachers and in the weights;
* weight monotonicity: raising one teacher's weight moves the result toward that teacher;
* temperature coherence: unanimous teachers give ``tau_T(p)``; ``T = 1`` is the plain operator;
  for geometric pooling tempering commutes with aggregation, ``A_T = tau_T(A_1)``; large T -> uniform.

    >>> agg = teacher_aggregator_resolver.make("geometric")
    >>> target = agg(torch.stack([p_qwen, p_other]), torch.tensor([0.7, 0.3]), temperature=2.0)
"""

from __future__ import annotations

import torch

from core.resolver import Resolver

_FLOOR = 1e-12  # log floor: disjoint top-k supports stay defined in log space


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``tau_T(p) ∝ p^(1/T)`` along the last axis; zeros stay zero."""
    if temperature == 1.0:
        return probs
    logp = torch.where(probs > 0, torch.log(probs.clamp_min(1e-300)) / temperature, float("-inf"))
    return torch.softmax(logp, dim=-1)


def _weights(weights: torch.Tensor | None, k: int, like: torch.Tensor) -> torch.Tensor:
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if w.shape != (k,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {k} non-negative numbers with a positive sum, got {w.tolist()}")
    return w / w.sum()


class Aggregator:
    """Base contract: ``__call__(probs (K, ..., V), weights (K,) | None, temperature) -> (..., V)``."""

    def __call__(self, probs: torch.Tensor, weights: torch.Tensor | None = None,
                 temperature: float = 1.0) -> torch.Tensor:
        raise NotImplementedError


class ArithmeticAggregator(Aggregator):
    """Weighted mixture ``sum_k w_k tau_T(p_k)``."""

    synonyms = ("mean", "linear")

    def __call__(self, probs, weights=None, temperature=1.0):
        w = _weights(weights, probs.shape[0], probs)
        p = soften(probs, temperature)
        return torch.einsum("k,k...->...", w, p)


class GeometricAggregator(Aggregator):
    """Normalised geometric (log-linear) pooling ``∝ prod_k p_k^(w_k / T)``."""

    synonyms = ("loglinear", "logarithmic")

    def __call__(self, probs, weights=None, temperature=1.0):
        w = _weights(weights, probs.shape[0], probs)
        logp = torch.log(probs.clamp_min(_FLOOR))
        return torch.softmax(torch.einsum("k,k...->...", w, logp) / temperature, dim=-1)


class ConfidenceAggregator(Aggregator):
    """Mixture whose weights follow each teacher's confidence per position.

    ``w_k(x) ∝ prior_k * (1 - H(tau_T(p_k(x))) / log V + eps)``: a sharper (lower-entropy) teacher
    counts more at that position; ``prior`` are the given weights.
    """

    synonyms = ("confidenceweighted", "entropy")

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def __call__(self, probs, weights=None, temperature=1.0):
        prior = _weights(weights, probs.shape[0], probs)
        p = soften(probs, temperature)
        V = p.shape[-1]
        entropy = -(torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), 0.0)).sum(-1)  # (K, ...)
        conf = (1 - entropy / torch.log(torch.tensor(float(V), dtype=p.dtype))).clamp_min(0) + self.eps
        w = prior.view(-1, *([1] * (p.dim() - 2))) * conf  # (K, ...)
        w = w / w.sum(0, keepdim=True)
        return (w[..., None] * p).sum(0)


teacher_aggregator_resolver: Resolver[Aggregator] = Resolver(
    Aggregator, [ArithmeticAggregator, GeometricAggregator, ConfidenceAggregator],
    suffix="aggregator", default="arithmetic", kind="teacher aggregator")
