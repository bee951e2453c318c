"""Holm's step-down correction of p-values for a family of tests (here: several trainers against one baseline).

Holm (1979) controls the family-wise error rate like Bonferroni but rejects at least as often. With the m
p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted values are
``p~_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))``; a hypothesis is rejected at level alpha when p~ <= alpha.
(scipy's ``false_discovery_control`` is Benjamini-Hochberg, a different error rate, and statsmodels is not a
dependency, so the few lines are here.)
"""
from __future__ import annotations

import numpy as np


def holm_adjust(p_values) -> np.ndarray:
    """Holm-adjusted p-values in the input order. NaN entries (no test) stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
