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
