"""Evaluation helpers: representation similarity between student and teacher."""

from __future__ import annotations

import torch


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two representations of the same inputs.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc`` (N, C) and
    ``Yc`` (N, D); widths may differ. 1 = same up to rotation and scale, 0 = unrelated.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs: {x.shape[0]} vs {y.shape[0]} rows")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (y.T @ x).pow(2).sum()
    den = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(num / den.clamp_min(1e-300))


@torch.no_grad()
def pooled_hidden(model, input_ids: torch.Tensor, mask: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Mean over valid positions of the student's final hidden states: (N, T) -> (N, C)."""
    model.eval()
    out = []
    for s in range(0, input_ids.shape[0], batch_size):
        _, h = model(input_ids[s:s + batch_size], return_hidden=True)
        m = mask[s:s + batch_size].to(h.dtype)[..., None]
        out.append((h * m).sum(1) / m.sum(1).clamp_min(1.0))
    return torch.cat(out)


@torch.no_grad()
def student_target_nll(model, ids: torch.Tensor, *, n_token_ids: int, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Next-token NLL of a student with a kept vocabulary, in its own and in the full tokenizer space.

    ``kept``: the student's output space, where every id outside the kept set is the "unknown"
    class (id 0); this is the perplexity the recipe reports. ``full``: the unknown class's
    probability spread evenly over the ``n_token_ids - (V - 1)`` ids the student does not keep. That
    gives a full-vocabulary perplexity, comparable with the teacher's and across kept vocabularies.

    Args:
        model: a :class:`experts.qrh.QRHModel` with a vocabulary map.
        ids: (N, T + 1) tokenizer ids; position t predicts ``ids[:, t + 1]``.
        n_token_ids: size of the tokenizer vocabulary.
    Returns:
        ``kept`` and ``full`` (N, T) float32 NLLs in nats (mask padding yourself).
    """
    import math

    import torch.nn.functional as F

    model.eval()
    s_ids = model.to_student_ids(ids)
    spread = math.log(n_token_ids - (model.config.vocab_size - 1))
    kept = []
    for s in range(0, ids.shape[0], batch_size):
        x = s_ids[s:s + batch_size]
        logp = F.log_softmax(model(x[:, :-1]).float(), -1)  # (b, T, V)
        kept.append(-logp.gather(-1, x[:, 1:, None])[..., 0])
    kept_nll = torch.cat(kept)
    return {"kept": kept_nll, "full": kept_nll + spread * (s_ids[:, 1:] == 0)}
