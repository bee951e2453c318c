"""Aggregation over folds and the paired per-case test used by ``nnunet-lmnet compare``."""
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
