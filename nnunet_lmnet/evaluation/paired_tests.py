"""Paired per-case comparison of several trainers with a reference trainer.

Per trainer x metric x class: Wilcoxon signed-rank test over the cases both trainers have (stats.paired_wilcoxon),
Holm-corrected over the trainers compared with the same reference (one family per metric and class), a paired
bootstrap 95% CI of the mean difference, and for Dice a flag when the difference is within nnU-Net's run-to-run
spread.
"""
from __future__ import annotations

import math

from ..nnunet_paths import sort_class_keys

# Identical nnU-Net trainings differ by up to ~1.8 Dice points on small datasets (nnU-Net issue #2624; training is
# kept non-deterministic on purpose), so a smaller difference in mean Dice says nothing about the trainer.
RUN_TO_RUN_SPREAD_DICE = 0.018
SPREAD_NOTE = "within nnU-Net's run-to-run spread (nnU-Net #2624)"
SPREAD_RULE = (f"a Dice difference is flagged \"{SPREAD_NOTE}\" when |mean Δ| < {RUN_TO_RUN_SPREAD_DICE} "
               f"(1.8 Dice points) or its bootstrap 95% CI contains 0 (or cannot be computed: fewer than 2 pairs)")

PAIRED_COLUMNS = ["trainer", "reference", "metric", "class", "n_cases_common", "n", "n_excluded", "median_diff",
                  "mean_diff", "ci_low", "ci_high", "statistic", "p_value", "p_holm", "within_spread", "note"]


def within_spread(metric: str, mean_diff: float, ci_low: float, ci_high: float):
    """True/False for Dice rows (see SPREAD_RULE); None for other metrics or when there is no difference."""
    if metric != "Dice" or not math.isfinite(mean_diff):
        return None
    ci_excludes_zero = math.isfinite(ci_low) and math.isfinite(ci_high) and (ci_low > 0 or ci_high < 0)
    return below_spread(mean_diff) or not ci_excludes_zero


def below_spread(mean_diff: float) -> bool:
    # rounded so that a difference printed as 0.0180 is not called smaller than 0.018 by a float artefact
    return round(abs(mean_diff), 9) < RUN_TO_RUN_SPREAD_DICE


def paired_table(case_df, trainers: list[str], metrics) -> tuple["object", dict]:
    """Every trainer against trainers[0], paired by case id (a case in several folds is averaged first).

    Returns (table with PAIRED_COLUMNS, {trainer: number of cases found in more than one fold}).
    """
    import pandas as pd

    from .multiple_comparisons import holm_adjust
    from .stats import paired_bootstrap_ci, paired_wilcoxon

    cols = [m for m in metrics if m in case_df.columns]
    per_case = case_df.groupby(["trainer", "case", "class"], sort=False)[cols].mean().reset_index()
    folds_per_case = case_df.groupby(["trainer", "case"])["fold"].nunique()
    duplicates = {t: int((n > 1).sum()) for t, n in folds_per_case.groupby(level="trainer")}
    ref_name = trainers[0]
    ref = per_case[per_case["trainer"] == ref_name].set_index(["case", "class"])
    classes = ["mean"] + sort_class_keys(c for c in per_case["class"].unique() if c != "mean")
    rows = []
    for t in trainers[1:]:
        other = per_case[per_case["trainer"] == t].set_index(["case", "class"])
        common = other.index.intersection(ref.index)
        for metric in cols:
            for cls in classes:
                idx = [i for i in common if i[1] == cls]
                if not idx:
                    continue
                a = other.loc[idx, metric].to_numpy(float)
                b = ref.loc[idx, metric].to_numpy(float)
                res = paired_wilcoxon(a, b)
                low, high = paired_bootstrap_ci(a, b)
                res.update({"trainer": t, "reference": ref_name, "metric": metric, "class": cls,
                            "n_cases_common": len(idx), "ci_low": low, "ci_high": high,
                            "within_spread": within_spread(metric, res["mean_diff"], low, high)})
                rows.append(res)
    table = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    table["p_holm"] = table["p_holm"].astype(float)
    for _, idx in table.groupby(["metric", "class"], sort=False).groups.items():
        table.loc[idx, "p_holm"] = holm_adjust(table.loc[idx, "p_value"].to_numpy(float))
    return table, duplicates
