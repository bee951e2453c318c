"""Precision, recall, accuracy and RAD per case and class, from the TP/FP/FN/TN that nnU-Net writes per case.

nnU-Net's ``summary.json`` holds, per case and class, the voxel counts TP, FP, FN and TN (ignore-label voxels
already removed). The papers' other metrics follow from them:

* Precision = TP / (TP + FP)
* Recall (sensitivity) = TP / (TP + FN)
* Accuracy = (TP + TN) / (TP + FP + FN + TN)   (per class: the class against everything else)
* RAD (relative area/volume difference) = |pred - ref| / ref with pred = TP + FP and ref = TP + FN,
  i.e. |FP - FN| / (TP + FN); 0 is perfect, lower is better, and it can exceed 1.

Undefined values follow nnU-Net's own rule for Dice (NaN when reference and prediction are both empty, i.e. when
its denominator is 0): every metric is NaN exactly where its denominator is 0, and NaN values are skipped by the
means (nnU-Net's ``nanmean``). So Precision is NaN when nothing was predicted (TP + FP = 0), Recall and RAD are NaN
when the reference is empty (TP + FN = 0) and Accuracy only when no voxel was counted. The report counts such cases
per class (see :func:`empty_counts`), so that an excluded case is never silent.
"""
from __future__ import annotations

import numpy as np

COUNT_METRICS = ("Precision", "Recall", "Accuracy", "RAD")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision(tp, fp) -> np.ndarray:
    return _ratio(tp, np.add(tp, fp))


def recall(tp, fn) -> np.ndarray:
    return _ratio(tp, np.add(tp, fn))


def accuracy(tp, fp, fn, tn) -> np.ndarray:
    return _ratio(np.add(tp, tn), np.add(np.add(tp, fp), np.add(fn, tn)))


def relative_area_difference(tp, fp, fn) -> np.ndarray:
    """|(TP + FP) - (TP + FN)| / (TP + FN); NaN for an empty reference."""
    return _ratio(np.abs(np.subtract(fp, fn)), np.add(tp, fn))


def add_count_metrics(case_df):
    """Add the COUNT_METRICS columns to a per-case table with columns TP, FP, FN, TN (NaN counts give NaN)."""
    tp, fp, fn, tn = (case_df[c].to_numpy(float) for c in ("TP", "FP", "FN", "TN"))
    case_df = case_df.copy()
    case_df["Precision"] = precision(tp, fp)
    case_df["Recall"] = recall(tp, fn)
    case_df["Accuracy"] = accuracy(tp, fp, fn, tn)
    case_df["RAD"] = relative_area_difference(tp, fp, fn)
    return case_df


def empty_counts(case_df, group: list[str]):
    """Per group (e.g. trainer x class): cases with both masks empty, only the prediction, only the reference empty.

    both_empty: Dice, IoU, Precision, Recall and RAD undefined; pred_empty (reference not empty): Precision
    undefined; ref_empty (prediction not empty): Recall and RAD undefined.
    """
    import pandas as pd

    sub = case_df[case_df["class"] != "mean"]
    n_pred = sub["TP"].to_numpy(float) + sub["FP"].to_numpy(float)
    n_ref = sub["TP"].to_numpy(float) + sub["FN"].to_numpy(float)
    flags = pd.DataFrame({"both_empty": (n_pred == 0) & (n_ref == 0), "pred_empty": (n_pred == 0) & (n_ref > 0),
                          "ref_empty": (n_ref == 0) & (n_pred > 0)}, index=sub.index)
    flags[group] = sub[group]
    return flags.groupby(group, sort=False)[["both_empty", "pred_empty", "ref_empty"]].sum().astype(int).reset_index()
