"""The ranker's loss: regression plus a differentiable Spearman term at every hop.

The ranking term is what gives embedding magnitude its meaning ("bigger norm = better
architecture") at every hop, not only at the last one. Unlike the authors' code, which ranked only
the norms and correlated them with the raw target, both sides are ranked here: the target with
exact average ranks (it needs no gradient) and the norms with soft ranks. All hops are ranked in
one batched computation (the target's ranks once per mini-batch).
"""

from __future__ import annotations

import torch


def hard_rank(y: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank), 1-based, as scipy.stats.rankdata."""
    diff = y.unsqueeze(1) - y.unsqueeze(0)
    return (diff > 0).sum(1).to(y.dtype) + 0.5 * (diff == 0).sum(1).to(y.dtype) + 0.5


def soft_rank(x: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Smooth ranks via pairwise sigmoids on the standardised input, so ``tau`` is scale-free.

    ``x`` is [B] or [B, H] (H columns ranked independently along dim 0)."""
    z = (x - x.mean(0)) / ((x.std(0, unbiased=False) + 1e-8) * tau)  # scaled by 1/tau before the [B, B] pairs
    return torch.sigmoid(z.unsqueeze(1) - z.unsqueeze(0)).sum(1) + 0.5


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along dim 0 (``a`` [B] or [B, H], ``b`` [B]); one value per column."""
    a = a - a.mean(0)
    b = b - b.mean()
    if a.dim() == 2:
        b = b.unsqueeze(1)
    return (a * b).sum(0) / (a.norm(dim=0) * b.norm() + 1e-8)


def soft_spearman(x: torch.Tensor, y: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Differentiable in ``x``; ``y`` is ranked exactly."""
    return pearson(soft_rank(x, tau), hard_rank(y.detach()))


def ranker_loss(pred: torch.Tensor, y: torch.Tensor, hop_norms: torch.Tensor, rank_weight: float = 1.0, tau: float = 0.1,
                as_tensors: bool = False) -> tuple[torch.Tensor, dict]:
    """MSE(pred, y) + rank_weight * mean over hops of (1 - rho(y, ||h_G^m||_1)).

    ``hop_norms`` is [B, M+1]. Returns the loss and its parts for logging: floats, or detached
    0-d tensors with ``as_tensors`` (the training loop sums those and converts once an epoch).
    A batch whose targets are all equal has no ranks: its ranking term is 0.
    """
    mse = torch.mean((pred - y) ** 2)
    if rank_weight > 0 and y.numel() > 2:
        ry = hard_rank(y.detach())
        rhos = pearson(soft_rank(hop_norms, tau), ry)  # [M+1]
        rank = (1 - rhos).mean() * (ry.max() > ry.min())  # no sync: a 0/1 factor, not an if
    else:
        rank = torch.zeros((), dtype=pred.dtype)
    loss = mse + rank_weight * rank
    parts = {"loss": loss.detach(), "mse": mse.detach(), "rank_loss": rank.detach()}
    return loss, parts if as_tensors else {k: float(v) for k, v in parts.items()}
