"""From per-case metrics to per-fold means, per-case foreground means, and mean ± std over folds or cases.

Per fold, the overlap metrics (Dice, IoU, Precision, Recall, Accuracy, RAD) are aggregated as nnU-Net aggregates
its ``summary.json``: per class the mean over the fold's cases skipping NaN (``np.nanmean``), and ``mean`` = the
mean over the class means (``np.mean``: NaN when a class is undefined in every case). On the full case set that
reproduces nnU-Net's ``mean`` and ``foreground_mean`` exactly; on a reduced (shared) case set it is the same rule.
Boundary metrics (HD95, NSD) keep their own rule (class means skipping NaN, ``mean`` skipping undefined classes).
"""
from __future__ import annotations

import math

from ..nnunet_paths import sort_class_keys

OVERLAP_METRICS = ("Dice", "IoU", "Precision", "Recall", "Accuracy", "RAD")
BOUNDARY_METRICS = ("HD95", "NSD")
LOWER_IS_BETTER = {"HD95", "RAD"}


def add_case_means(case_df, metrics):
    """Class 'mean' rows per (trainer, fold, case): mean over foreground classes, NaN classes skipped."""
    import pandas as pd

    cols = [m for m in metrics if m in case_df.columns]
    g = case_df[case_df["class"] != "mean"].groupby(["trainer", "fold", "case"], sort=False)[cols]
    means = g.mean().reset_index()  # pandas' mean skips NaN: a case's classes that are empty in ref and pred
    means["class"] = "mean"
    return pd.concat([case_df, means], ignore_index=True)


def fold_means(case_df, metrics):
    """Per trainer x fold x class (+ 'mean'): the module docstring's rules, from rows without class 'mean'."""
    import pandas as pd

    sub = case_df[case_df["class"] != "mean"]
    keys = ["trainer", "fold"]
    overlap = [m for m in metrics if m in OVERLAP_METRICS and m in sub.columns]
    boundary = [m for m in metrics if m in BOUNDARY_METRICS and m in sub.columns]
    per_class = sub.groupby(keys + ["class"], sort=False)[overlap + boundary].mean().reset_index()
    g = per_class.groupby(keys, sort=False)
    overall = g[overlap].agg(lambda s: s.mean(skipna=False)) if overlap else None
    if boundary:
        b = g[boundary].mean()
        overall = b if overall is None else overall.join(b)
    overall = overall.reset_index()
    overall["class"] = "mean"
    return pd.concat([per_class, overall], ignore_index=True)


def _class_order(values) -> list[str]:
    return sort_class_keys(c for c in values if c != "mean") + ["mean"]


def summarize_folds(fold_df, trainers: list[str], metrics, all_folds: list[int]):
    """Per trainer x metric x class: n_folds, mean, sample std (ddof=1) over folds and the value of each fold."""
    import pandas as pd

    from .stats import mean_std

    rows = []
    for t in trainers:
        sub = fold_df[fold_df["trainer"] == t]
        for metric in metrics:
            if metric not in sub.columns:
                continue
            for cls in _class_order(sub["class"].unique()):
                s = sub[sub["class"] == cls]
                by_fold = {int(f): float(v) for f, v in zip(s["fold"], s[metric])}
                mean, std, n = mean_std(by_fold.values())
                row = {"trainer": t, "metric": metric, "class": cls, "n_folds": n, "mean": mean, "std": std}
                for k in all_folds:
                    row[f"fold_{k}"] = by_fold.get(k, math.nan)
                rows.append(row)
    return pd.DataFrame(rows)


def summarize_cases(case_df, trainers: list[str], metrics):
    """Per trainer x metric x class over the cases of one evaluation (a test set).

    mean: per class the nanmean over cases; for 'mean' the mean over the class means (nnU-Net's foreground_mean).
    std: sample std (ddof=1) over the cases' values (for 'mean': of the per-case foreground means); n_cases: cases
    where the metric is defined.
    """
    import pandas as pd

    from .stats import mean_std

    rows = []
    for t in trainers:
        sub = case_df[case_df["trainer"] == t]
        class_means = {}
        for metric in metrics:
            if metric not in sub.columns:
                continue
            for cls in _class_order(sub["class"].unique()):
                values = sub.loc[sub["class"] == cls, metric].to_numpy(float)
                mean, std, n = mean_std(values)
                if cls != "mean":
                    class_means.setdefault(metric, []).append(mean)
                elif metric in OVERLAP_METRICS:
                    cm = class_means.get(metric, [])
                    mean = float(sum(cm) / len(cm)) if cm else math.nan
                rows.append({"trainer": t, "metric": metric, "class": cls, "n_cases": n, "mean": mean, "std": std})
    return pd.DataFrame(rows)
