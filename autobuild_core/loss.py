"""The ranker's loss: regression plus a differentiable Spearman term at every hop.

The ranking term is what gives embedding magnitude its meaning ("bigger norm = better
architecture") at every hop, not only at the last one. Unlike the authors' code, which ranked only
the norms and correlated them with the raw target, both sides are ranked here: the target with
exact average ranks (it needs no gradient) and the norms with soft ranks.
"""

from __future__ import annotations

import torch


def hard_rank(y: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank), 1-based, as scipy.stats.rankdata."""
    diff = y.unsqueeze(1) - y.unsqueeze(0)
    return (diff > 0).sum(1).to(y.dtype) + 0.5 * (diff == 0).sum(1).to(y.dtype) + 0.5


def soft_rank(x: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Smooth ranks via pairwise sigmoids on the standardised input, so ``tau`` is scale-free."""
    z = (x - x.mean()) / (x.std(unbiased=False) + 1e-8)
    return torch.sigmoid((z.unsqueeze(1) - z.unsqueeze(0)) / tau).sum(1) + 0.5


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + 1e-8)


def soft_spearman(x: torch.Tensor, y: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Differentiable in ``x``; ``y`` is ranked exactly."""
    return pearson(soft_rank(x, tau), hard_rank(y.detach()))


def ranker_loss(pred: torch.Tensor, y: torch.Tensor, hop_norms: torch.Tensor, rank_weight: float = 1.0, tau: float = 0.1) -> tuple[torch.Tensor, dict]:
    """MSE(pred, y) + rank_weight * mean over hops of (1 - rho(y, ||h_G^m||_1)).

    ``hop_norms`` is [B, M+1]. Returns the loss and its parts (floats) for logging.
    """
    mse = torch.mean((pred - y) ** 2)
    if rank_weight > 0 and y.numel() > 2 and float(y.std()) > 0:
        rhos = torch.stack([soft_spearman(hop_norms[:, m], y, tau) for m in range(hop_norms.shape[1])])
        rank = (1 - rhos).mean()
    else:
        rank = torch.zeros((), dtype=pred.dtype)
    loss = mse + rank_weight * rank
    return loss, {"loss": float(loss.detach()), "mse": float(mse.detach()), "rank_loss": float(rank.detach())}
