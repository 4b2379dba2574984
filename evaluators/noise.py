"""How noisy are the labels, and how well can any predictor rank them at best?

If the same architectures are measured at two seeds, the Spearman ``r`` between the repeats is the
labels' test-retest reliability, and no predictor can be expected to exceed
``spearman_ceiling = sqrt(max(r, 0))`` against one noisy measurement (classical test theory;
exact for Pearson, approximate for ranks). ``reliability`` gives the same from variances:
``1 - (mean(Δ²)/2) / var(measurements)``. Derivation: docs/evaluation.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from search_spaces.errors import ConfigError


@dataclass(frozen=True)
class NoiseReport:
    metric: str
    n: int                 # architectures measured twice
    mean_abs_diff: float   # mean |y_seed - y_seed+1|
    sd_within: float       # per-measurement noise sd, sqrt(mean(Δ²)/2)
    sd_across: float       # sd of the per-architecture means across architectures (ddof=1)
    spearman_repeat: float
    pearson_repeat: float
    reliability: float     # 1 - sd_within² / var(all measurements)
    spearman_ceiling: float  # sqrt(max(spearman_repeat, 0))

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.metric}: n={self.n}, mean |Δ|={self.mean_abs_diff:.4g}, noise sd={self.sd_within:.4g}, "
                f"sd across archs={self.sd_across:.4g}, Spearman between repeats={self.spearman_repeat:.4f}, "
                f"Spearman ceiling≈{self.spearman_ceiling:.4f}")


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def noise_report(first: Sequence[float], second: Sequence[float], metric: str = "value") -> NoiseReport:
    """Noise statistics of paired repeat measurements (``first[i]`` and ``second[i]`` are the same
    architecture). Identical repeats give ceiling 1; fewer than 2 pairs give NaN correlations."""
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"noise_report needs two equally long 1-D sequences, got shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ConfigError("noise_report: measurements must be finite (drop failed records first)")
    n = len(a)
    if n == 0:
        nan = float("nan")
        return NoiseReport(metric, 0, nan, nan, nan, nan, nan, nan, nan)
    d = a - b
    sd_within = math.sqrt(float(np.mean(d ** 2)) / 2.0)
    means = (a + b) / 2.0
    sd_across = float(np.std(means, ddof=1)) if n > 1 else float("nan")
    if np.all(d == 0):
        sp = pe = 1.0 if n > 1 and np.ptp(a) > 0 else float("nan")
    else:
        sp = _corr(_ranks(a), _ranks(b))
        pe = _corr(a, b)
    allv = np.concatenate([a, b])
    var_all = float(np.var(allv, ddof=1)) if n > 1 else float("nan")
    rel = 1.0 - sd_within ** 2 / var_all if n > 1 and var_all > 0 else float("nan")
    ceiling = math.sqrt(max(sp, 0.0)) if math.isfinite(sp) else float("nan")
    return NoiseReport(metric, n, float(np.mean(np.abs(d))), sd_within, sd_across, sp, pe, rel, ceiling)


def noise_from_records(first: Sequence, second: Sequence, metrics: Sequence[str] | None = None) -> dict[str, NoiseReport]:
    """Pair ok records by key (two seeds of the same architectures) and report per metric."""
    by_key = {r.key: r for r in second if r is not None and r.ok}
    pairs = [(r, by_key[r.key]) for r in first if r is not None and r.ok and r.key in by_key]
    if metrics is None:
        common = None
        for r1, r2 in pairs:
            m = set(r1.metrics) & set(r2.metrics)
            common = m if common is None else common & m
        metrics = sorted(common or [])
    return {m: noise_report([p[0].metrics[m] for p in pairs], [p[1].metrics[m] for p in pairs], metric=m) for m in metrics}


def measure_noise(evaluator, space, archs: Sequence, store, fraction: float = 0.1, seed: int = 0, retries: int = 2,
                  progress: bool = False, sample_seed: int = 0, min_archs: int = 3) -> dict[str, NoiseReport]:
    """Re-measure a random ``fraction`` of ``archs`` with ``seed + 1`` and compare with ``seed``.

    Both passes go through the store, so the ``seed`` pass usually costs nothing and the repeat is
    itself resumable. Returns one :class:`NoiseReport` per metric both repeats share.
    """
    from .base import parse_all
    from .store import evaluate_archs

    if not 0 < fraction <= 1:
        raise ConfigError(f"noise fraction must lie in (0, 1], got {fraction}")
    parsed = parse_all(space, archs)
    uniq = list({evaluator.record_key(space, a): a for a in parsed}.values())
    k = min(len(uniq), max(min_archs, int(math.ceil(fraction * len(uniq)))))
    rng = np.random.default_rng(sample_seed)
    pick = [uniq[i] for i in sorted(rng.choice(len(uniq), size=k, replace=False))] if k else []
    a = evaluate_archs(evaluator, space, pick, store, seed=seed, retries=retries, progress=progress)
    b = evaluate_archs(evaluator, space, pick, store, seed=seed + 1, retries=retries, progress=progress)
    return noise_from_records(a.records, b.records)
