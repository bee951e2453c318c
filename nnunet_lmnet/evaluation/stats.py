"""Mean ± std over folds, the paired Wilcoxon test and the paired bootstrap CI (`compare`, `cross-evaluate`)."""
from __future__ import annotations

import math

import numpy as np


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n) of the finite values; std is NaN for fewer than two values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    std = float(np.std(v, ddof=1)) if v.size > 1 else math.nan
    return float(np.mean(v)), std, int(v.size)


def paired_wilcoxon(values: np.ndarray, reference: np.ndarray) -> dict:
    """Two-sided Wilcoxon signed-rank test of ``values - reference`` over paired cases.

    Pairs where either value is NaN or infinite are excluded and counted in ``n_excluded``. Zero differences are
    dropped by the test itself (scipy's default ``zero_method='wilcox'``). Returns n (pairs used), n_excluded,
    median_diff, mean_diff, statistic (scipy's: min(W+, W-) for the two-sided test) and p_value.
    """
    from scipy.stats import wilcoxon

    a = np.asarray(values, dtype=float)
    b = np.asarray(reference, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    out = {"n": int(a.size), "n_excluded": int((~ok).sum()), "median_diff": math.nan, "mean_diff": math.nan,
           "statistic": math.nan, "p_value": math.nan, "note": ""}
    if a.size == 0:
        out["note"] = "no pairs"
        return out
    d = a - b
    out["median_diff"] = float(np.median(d))
    out["mean_diff"] = float(np.mean(d))
    if np.all(d == 0):
        out["note"] = "all differences are zero"
        return out
    try:
        res = wilcoxon(a, b)
    except ValueError as e:  # e.g. too few non-zero differences
        out["note"] = str(e)
        return out
    out["statistic"] = float(res.statistic)
    out["p_value"] = float(res.pvalue)
    return out


BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
_BOOTSTRAP_CHUNK = 4_000_000  # resampled values drawn at once (memory: 8 bytes each)


def paired_bootstrap_ci(values: np.ndarray, reference: np.ndarray, n_resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean paired difference ``values - reference``.

    Pairs with NaN/inf in either value are dropped (as in :func:`paired_wilcoxon`); the remaining n pairs are
    resampled with replacement ``n_resamples`` times (cases, not values, are drawn, so the pairing is kept), from a
    fresh ``numpy.random.default_rng(seed)``, so a row's interval does not depend on what else is computed.
    Returns (low, high); (NaN, NaN) for fewer than two pairs.
    """
    a = np.asarray(values, dtype=float)
    b = np.asarray(reference, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[ok]
    n = d.size
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    step = max(1, _BOOTSTRAP_CHUNK // n)
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)
