"""Distillation losses as modules (SPEC §5), each with the plain formula in its docstring.

Shapes: ``N`` positions (tokens, flattened from (B, T)), ``V`` vocabulary, ``C`` student width,
``D`` teacher embedding width. Teacher distributions may be sparse: logits of non-kept tokens are
``-inf`` (top-k / restricted vocabulary), so the softmax renormalises over the kept tokens.

    >>> kd = loss_resolver.make("kd", temperature=2.0)
    >>> kd(student_logits, teacher_logits, mask=mask)        # T^2 KL(p_T || p_S), token-averaged
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.resolver import Resolver


def _flatten(x: torch.Tensor | None, last: bool = True) -> torch.Tensor | None:
    if x is None:
        return None
    return x.reshape(-1, x.shape[-1]) if last else x.reshape(-1)


def _finite(logp: torch.Tensor) -> torch.Tensor:
    """``log q`` with ``-inf`` (excluded classes, q = 0) replaced by 0, so ``q * log q`` and its gradient stay 0."""
    return torch.where(torch.isfinite(logp), logp, torch.zeros_like(logp))


def _token_mean(per_token: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over positions where ``mask`` is true: (N,) -> ()."""
    if mask is None:
        return per_token.mean()
    m = mask.reshape(-1).to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


def _teacher_log_probs(teacher_logits: torch.Tensor | None, teacher_probs: torch.Tensor | None,
                       temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(p_T, log p_T) at temperature T from logits (tempered here) or from given probabilities."""
    if (teacher_logits is None) == (teacher_probs is None):
        raise ValueError("give exactly one of teacher_logits or teacher_probs")
    if teacher_logits is not None:
        logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
        return logp.exp(), logp
    p = teacher_probs.float()
    return p, torch.log(p.clamp_min(1e-30))


class DistillLoss(nn.Module):
    """Base class of every loss in :data:`loss_resolver`."""


class KDLoss(DistillLoss):
    """Soft-target KD: ``T^2 * KL(p_T^(T) || p_S^(T))`` averaged over positions.

    Args (forward):
        student_logits: (B, T, V) or (N, V).
        teacher_logits: same shape (``-inf`` where a token is not kept), or
        teacher_probs: same shape, already tempered (e.g. an aggregated multi-teacher target).
        mask: (B, T) or (N,), positions to average over (default all).
    Returns: scalar.
    """

    synonyms = ("forward_kl", "kl")

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits=None, *, teacher_probs=None, mask=None,
                temperature: float | None = None):
        T = self.temperature if temperature is None else temperature
        s = F.log_softmax(_flatten(student_logits).float() / T, dim=-1)
        p, logp = _teacher_log_probs(_flatten(teacher_logits), _flatten(teacher_probs), T)
        per_token = torch.where(p > 0, p * (logp - s), 0.0).sum(-1)  # 0 log 0 = 0 (sparse teachers)
        return T * T * _token_mean(per_token, mask)


class ReverseKLLoss(DistillLoss):
    """Reverse KL (MiniLLM-style, mode-seeking): ``T^2 * KL(p_S^(T) || p_T^(T))``, token-averaged.

    Sparse teachers: ``log p_T`` is floored at ``log(1e-30)`` outside the kept tokens, so student
    mass there is penalised heavily but finitely. Shapes as :class:`KDLoss`.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits=None, *, teacher_probs=None, mask=None,
                temperature: float | None = None):
        T = self.temperature if temperature is None else temperature
        s = F.log_softmax(_flatten(student_logits).float() / T, dim=-1)
        _, logp = _teacher_log_probs(_flatten(teacher_logits), _flatten(teacher_probs), T)
        q = s.exp()
        per_token = (q * (_finite(s) - logp.clamp_min(-69.0))).sum(-1)
        return T * T * _token_mean(per_token, mask)


class JSDLoss(DistillLoss):
    """Jensen-Shannon divergence ``T^2 * (KL(p_T||m) + KL(p_S||m)) / 2``, ``m = (p_T + p_S)/2``.

    Shapes as :class:`KDLoss`.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits=None, *, teacher_probs=None, mask=None,
                temperature: float | None = None):
        T = self.temperature if temperature is None else temperature
        s = F.log_softmax(_flatten(student_logits).float() / T, dim=-1)
        p, logp = _teacher_log_probs(_flatten(teacher_logits), _flatten(teacher_probs), T)
        q = s.exp()
        logm = torch.log((0.5 * (p + q)).clamp_min(1e-30))
        per_token = 0.5 * (torch.where(p > 0, p * (logp - logm), 0.0).sum(-1)
                           + (q * (_finite(s) - logm)).sum(-1))
        return T * T * _token_mean(per_token, mask)


class AlignmentLoss(DistillLoss):
    """Semantic alignment through a learned projection: MSE or ``1 - cos``.

    The student representation is mean-pooled over unmasked positions when it has a time axis.

    Args (forward):
        student_hidden: (B, T, C) or (B, C).
        teacher_embedding: (B, D) (a sentence-encoder embedding or mean-pooled teacher states).
        mask: (B, T) positions to pool over (default all).
    Returns: scalar, averaged over the batch.
    """

    def __init__(self, student_dim: int, teacher_dim: int, kind: str = "cosine"):
        super().__init__()
        if kind not in ("mse", "cosine"):
            raise ValueError(f"alignment kind {kind!r}; allowed: mse, cosine")
        self.kind = kind
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, student_hidden, teacher_embedding, mask=None):
        h = student_hidden
        if h.dim() == 3:
            m = torch.ones(h.shape[:2], device=h.device) if mask is None else mask.to(h.dtype)
            h = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)  # (B, C)
        z = self.proj(h)  # (B, D)
        t = teacher_embedding.to(z.dtype)
        if self.kind == "mse":
            return F.mse_loss(z, t)
        return (1 - F.cosine_similarity(z, t, dim=-1)).mean()


class ResistanceWeightedLoss(DistillLoss):
    """Task loss weighted by resistance: ``sum_i R_i L_i / sum_i R_i``, ``L_i`` = token-mean CE of sample i.

    Args (forward):
        student_logits: (B, T, V); labels: (B, T) with ``ignore_index`` for no target;
        resistance: (B,) non-negative weights (``None`` = all ones: plain CE averaged per sample).
    Returns: scalar.
    """

    synonyms = ("resist",)

    def __init__(self, ignore_index: int = -100):
        super().__init__()
        self.ignore_index = ignore_index

    def per_sample(self, student_logits, labels):
        B, T, V = student_logits.shape
        ce = F.cross_entropy(student_logits.float().reshape(-1, V), labels.reshape(-1),
                             ignore_index=self.ignore_index, reduction="none").view(B, T)
        valid = (labels != self.ignore_index).float()
        return (ce * valid).sum(1) / valid.sum(1).clamp_min(1.0)  # (B,)

    def forward(self, student_logits, labels, resistance=None):
        per = self.per_sample(student_logits, labels)
        r = torch.ones_like(per) if resistance is None else resistance.to(per.dtype)
        return (r * per).sum() / r.sum().clamp_min(1e-12)


class AlphaMixLoss(DistillLoss):
    """Seed 000's mix ``alpha * CE + (1 - alpha) * KD`` (CE token-averaged over valid labels).

    Args (forward): student_logits (B, T, V); labels (B, T); teacher_logits or teacher_probs as
    :class:`KDLoss`; mask (B, T) for the KD term (default: labels != ignore_index).
    """

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, ignore_index: int = -100):
        super().__init__()
        self.alpha, self.ignore_index = alpha, ignore_index
        self.kd = KDLoss(temperature)

    def forward(self, student_logits, labels, teacher_logits=None, *, teacher_probs=None, mask=None):
        V = student_logits.shape[-1]
        ce = F.cross_entropy(student_logits.float().reshape(-1, V), labels.reshape(-1), ignore_index=self.ignore_index)
        mask = (labels != self.ignore_index) if mask is None else mask
        kd = self.kd(student_logits, teacher_logits, teacher_probs=teacher_probs, mask=mask)
        return self.alpha * ce + (1 - self.alpha) * kd


class TotalLoss(DistillLoss):
    """``L_total = L_KD + lambda1 * L_align + lambda2 * L_resist`` (SPEC §5).

    Any term can be switched off by giving it weight 0 or leaving its inputs out. ``forward``
    returns a dict with every computed term and ``"loss"``.

    Args (forward):
        student_logits: (B, T, V); labels: (B, T);
        teacher_logits / teacher_probs: (B, T, V) or None (no KD term);
        student_hidden: (B, T, C); teacher_embeddings: {name: (B, D)} for the alignment heads;
        resistance: (B,) or None (uniform weights); mask: (B, T) (default labels != ignore);
        kd_student_logits: what the KD term compares with the teacher when it is not ``student_logits``
            (a pretrained student's collapse to the teacher's top-k, ``distill.students.collapse_topk``).
        scale: ``{term: factor}`` multiplying ``"kd"`` / ``"align"`` / ``"resist"`` inside ``"loss"`` only
            (the returned terms stay the batch's own means). A data-parallel rank passes the factors that
            turn its shard's means into its share of the global batch's (``distill.distributed.shard_scale``).
    """

    def __init__(self, kd: DistillLoss | None = None, alignments: dict[str, AlignmentLoss] | None = None,
                 lambda_align: float = 0.1, lambda_resist: float = 1.0, kd_weight: float = 1.0,
                 ignore_index: int = -100, kd_ignore_classes: tuple[int, ...] = ()):
        super().__init__()
        # classes the teacher never covers (the student's "unknown" id): dropped from the KD term only,
        # so the student distribution is renormalised over the teacher's vocabulary there
        self.kd_ignore_classes = tuple(kd_ignore_classes)
        self.kd = kd if kd is not None else KDLoss()
        self.alignments = nn.ModuleDict(alignments or {})
        self.resist = ResistanceWeightedLoss(ignore_index)
        self.lambda_align, self.lambda_resist, self.kd_weight = lambda_align, lambda_resist, kd_weight
        self.ignore_index = ignore_index

    def forward(self, student_logits, labels, teacher_logits=None, *, teacher_probs=None, student_hidden=None,
                teacher_embeddings=None, resistance=None, mask=None, temperature: float | None = None,
                kd_student_logits=None, scale: dict[str, float] | None = None):
        mask = (labels != self.ignore_index) if mask is None else mask
        out: dict[str, torch.Tensor] = {}
        total = student_logits.new_zeros((), dtype=torch.float32)

        def scaled(term: str) -> torch.Tensor:
            return out[term] if scale is None or term not in scale else out[term] * scale[term]

        if self.kd_weight and (teacher_logits is not None or teacher_probs is not None):
            kd_logits = student_logits if kd_student_logits is None else kd_student_logits
            if self.kd_ignore_classes:
                ignored = torch.tensor(self.kd_ignore_classes, device=student_logits.device)
                kd_logits = student_logits.index_fill(-1, ignored, float("-inf"))
            out["kd"] = self.kd(kd_logits, teacher_logits, teacher_probs=teacher_probs, mask=mask,
                                temperature=temperature)
            total = total + self.kd_weight * scaled("kd")
        if self.lambda_align and teacher_embeddings and student_hidden is not None:
            terms = [self.alignments[name](student_hidden, emb, mask) for name, emb in teacher_embeddings.items()]
            out["align"] = torch.stack(terms).mean()
            total = total + self.lambda_align * scaled("align")
        if self.lambda_resist:
            out["resist"] = self.resist(student_logits, labels, resistance)
            total = total + self.lambda_resist * scaled("resist")
        out["loss"] = total
        return out


loss_resolver: Resolver[DistillLoss] = Resolver(
    DistillLoss,
    [KDLoss, ReverseKLLoss, JSDLoss, AlignmentLoss, ResistanceWeightedLoss, AlphaMixLoss, TotalLoss],
    suffix="loss",
    default="kd",
    kind="KD loss",
)
