"""Small statistics used by the audit tools: Wilson intervals, t intervals of a mean, McNemar's exact test,
seeded bootstrap CIs.

The intervals and the test are scipy.stats' (installed as a dependency of scikit-learn), checked against values
worked by hand in tests/test_stats_stability.py. The bootstrap is written here: scipy.stats.bootstrap cannot
resample within strata, and core.audits.compare scores two models on the same replicates.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest, ttest_1samp


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (lo, hi) for a binomial proportion successes/n at confidence `level`
    (scipy.stats.binomtest(...).proportion_ci(method="wilson"), no continuity correction).

    n = 0 gives (nan, nan). Unlike the normal interval it stays inside [0, 1] and is sensible at 0/n
    and n/n, which matters for small error slices.
    """
    if n <= 0:
        return float("nan"), float("nan")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def mean_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval (lo, hi) for the mean of `values` (NaNs dropped) at confidence `level`.

    mean +- t(level, n - 1) * sd / sqrt(n), sd with n - 1 degrees of freedom (scipy.stats.ttest_1samp's
    confidence interval); (nan, nan) below 2 values. Used for the Grad-CAM audit's per-image means
    (concentration, probability drops) on a subsample.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    ci = ttest_1samp(v, 0.0).confidence_interval(confidence_level=level)
    return float(ci.low), float(ci.high)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (A right/B wrong, A wrong/B right).

    Under H0 (equal error rates) only_a ~ Binomial(only_a + only_b, 1/2): the two-sided binomial test
    (scipy.stats.binomtest), which for p = 1/2 is min(1, 2 * P(X <= min(only_a, only_b))). No discordant
    pairs: p = 1.
    """
    n = int(only_a) + int(only_b)
    if n == 0:
        return 1.0
    return float(binomtest(int(only_a), n, 0.5).pvalue)


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0, strata=None):
    """Yield n_boot seeded resamples (int arrays of length n) of range(n), drawn with replacement.

    `strata` (optional, (N,) labels) resamples within each stratum so every replicate keeps the class
    counts (an AUC needs both classes). The same seed gives the same resamples: two models scored on
    the same replicates give a paired bootstrap.
    """
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(np.asarray(strata) == s) for s in np.unique(strata)] if strata is not None \
        else [np.arange(n)]
    for _ in range(n_boot):
        yield np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])


def percentile_interval(vals, level: float = 0.95) -> tuple[float, float]:
    vals = [float(v) for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    alpha = 1 - level
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))


def bootstrap_ci(stat, arrays: tuple, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 strata=None) -> tuple[float, float]:
    """Percentile bootstrap interval of stat(*resampled arrays); rows resampled together, seeded
    (see bootstrap_indices). Replicates where stat returns None/nan are dropped.
    """
    n = len(arrays[0])
    if n == 0:
        return float("nan"), float("nan")
    vals = []
    for idx in bootstrap_indices(n, n_boot, seed, strata):
        v = stat(*(a[idx] for a in arrays))
        vals.append(v)
    return percentile_interval(vals, level)
