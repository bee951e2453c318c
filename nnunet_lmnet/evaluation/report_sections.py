"""Markdown sections shared by the `compare` and `cross-evaluate` reports."""
from __future__ import annotations

from ..nnunet_paths import sort_class_keys
from ..report_output import fmt_mean_std, fmt_num, fmt_p, is_nan, md_table
from .aggregate import LOWER_IS_BETTER
from .paired_tests import RUN_TO_RUN_SPREAD_DICE, SPREAD_NOTE, SPREAD_RULE, below_spread
from .stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED


ALPHA = 0.05  # significance level named in the verdict


def class_header(key: str, names: dict[str, str]) -> str:
    if key == "mean":
        return "mean"
    name = names.get(key)
    return f"{name} ({key})" if name else key


def metric_title(metric: str, nsd_tolerance: float = 2.0) -> str:
    return {"HD95": "HD95 [mm] (lower is better)", "NSD": f"NSD at {nsd_tolerance:g} mm",
            "RAD": "RAD (relative area difference, lower is better)"}.get(metric, metric)


def digits(metric: str) -> int:
    return 2 if metric == "HD95" else 4


def metric_tables(summary, trainers: list[str], metrics, names: dict[str, str], over: str,
                  nsd_tolerance: float = 2.0) -> list[str]:
    """One table per metric: trainers x classes, cells 'mean ± std' (``over`` says over what, e.g. 'folds')."""
    lines = []
    for metric in [m for m in metrics if m in set(summary["metric"])]:
        sub = summary[summary["metric"] == metric]
        classes = sort_class_keys(c for c in sub["class"].unique() if c != "mean") + ["mean"]
        rows = []
        for t in trainers:
            cells = [f"`{t}`"]
            for c in classes:
                s = sub[(sub["trainer"] == t) & (sub["class"] == c)]
                cells.append(fmt_mean_std(s["mean"].iloc[0], s["std"].iloc[0], digits(metric)) if len(s) else "–")
            rows.append(cells)
        lines += [f"## {metric_title(metric, nsd_tolerance)} — mean ± std over {over}", "",
                  md_table(["Trainer"] + [class_header(c, names) for c in classes], rows), ""]
    return lines


def _signed(x, d: int = 4) -> str:
    return "–" if is_nan(x) else f"{float(x):+.{d}f}"


def _ci(p, d: int) -> str:
    return "–" if is_nan(p["ci_low"]) else f"[{_signed(p['ci_low'], d)}, {_signed(p['ci_high'], d)}]"


def verdict_section(paired, trainers: list[str], what: str) -> list[str]:
    """Plain sentences on mean Dice (class 'mean') of every trainer against the reference."""
    ref = trainers[0]
    if len(trainers) < 2:
        return ["## Paired comparison", "",
                f"Only one trainer was given (`{ref}`), so there is no paired comparison. Give the baseline first "
                f"and the others after it, e.g. `-tr nnUNetTrainer {ref}`.", ""]
    lines = [f"## Verdict: mean Dice against `{ref}` ({what})", ""]
    rows = paired[(paired["metric"] == "Dice") & (paired["class"] == "mean")] if len(paired) else paired
    for t in trainers[1:]:
        r = rows[rows["trainer"] == t] if len(rows) else rows
        if not len(r) or int(r.iloc[0]["n"]) == 0:
            lines.append(f"- `{t}`: no case with a defined mean Dice for both trainers, so no paired comparison.")
            continue
        p = r.iloc[0]
        head = (f"- `{t}`: Δ mean Dice = {_signed(p['mean_diff'])} (95% CI {_ci(p, 4)}, {int(p['n'])} cases), "
                f"Holm-adjusted p = {fmt_p(p['p_holm'])}: ")
        if bool(p["within_spread"]):
            why = f"|Δ| < {RUN_TO_RUN_SPREAD_DICE}" if below_spread(float(p["mean_diff"])) else "the CI contains 0"
            lines.append(head + f"**{SPREAD_NOTE}** ({why}). This does not show that the trainers differ.")
        elif is_nan(p["p_holm"]) or float(p["p_holm"]) >= ALPHA:
            lines.append(head + f"larger than nnU-Net's run-to-run spread and the CI excludes 0, but the "
                                f"Holm-adjusted p is not below {ALPHA}: not significant after correction.")
        else:
            better = "better" if float(p["mean_diff"]) > 0 else "worse"
            lines.append(head + f"larger than nnU-Net's run-to-run spread, the CI excludes 0 and the difference is "
                                f"significant after Holm correction: `{t}` is {better} than `{ref}` on these cases "
                                f"(one training run each; a second run of each trainer is the way to be sure).")
    return lines + [""]


def paired_section(paired, trainers: list[str], names: dict[str, str], what: str) -> list[str]:
    if len(trainers) < 2:
        return []
    ref = trainers[0]
    lines = [f"## Paired per-case comparison with `{ref}` ({what}; Wilcoxon signed-rank, two-sided)", ""]
    if not len(paired):
        return lines + ["No case is shared by the reference and another trainer, so there is nothing to pair.", ""]
    rows = []
    for _, p in paired.iterrows():
        d = digits(p["metric"])
        note = SPREAD_NOTE if p["within_spread"] is True else ""
        note = "; ".join(x for x in (note, p["note"] or "") if x)
        rows.append([f"`{p['trainer']}`", p["metric"], class_header(p["class"], names), str(p["n"]),
                     str(p["n_excluded"]), _signed(p["mean_diff"], d), _ci(p, d), _signed(p["median_diff"], d),
                     fmt_num(p["statistic"], 1), fmt_p(p["p_value"]), fmt_p(p["p_holm"]), note])
    return lines + [md_table(["Trainer", "Metric", "Class", "n pairs", "excluded (NaN)", "mean Δ", "95% CI",
                              "median Δ", "W", "p", "p (Holm)", "note"], rows, align_right_from=3), ""]


def empty_cases_section(counts, names: dict[str, str]) -> list[str]:
    """counts: overlap_metrics.empty_counts by trainer x class; only rows with a non-zero count are shown."""
    shown = counts[(counts[["both_empty", "pred_empty", "ref_empty"]].sum(axis=1)) > 0] if len(counts) else counts
    if not len(shown):
        return []
    rows = [[f"`{r['trainer']}`", class_header(r["class"], names), str(r["both_empty"]), str(r["pred_empty"]),
             str(r["ref_empty"])] for _, r in shown.iterrows()]
    return ["## Cases with an empty reference or prediction", "",
            "Such cases are excluded (NaN) from the means of the metrics that are undefined for them: both empty: "
            "Dice, IoU, Precision, Recall, RAD; prediction empty only: Precision (Dice, IoU and Recall are 0); "
            "reference empty only: Recall and RAD (Dice, IoU and Precision are 0). Accuracy is always defined.", "",
            md_table(["Trainer", "Class", "both empty", "prediction empty", "reference empty"], rows,
                     align_right_from=2), ""]


def metric_notes() -> list[str]:
    lower = ", ".join(sorted(LOWER_IS_BETTER))
    return [
        "- Precision = TP/(TP+FP), Recall = TP/(TP+FN), Accuracy = (TP+TN)/(TP+FP+FN+TN) (per class: the class "
        "against everything else), RAD = |(TP+FP) − (TP+FN)|/(TP+FN) (relative area/volume difference), from "
        "the per-case TP/FP/FN/TN voxel counts in nnU-Net's `summary.json` (ignore-label voxels excluded). As for "
        "nnU-Net's Dice, a metric is NaN where its denominator is 0 and NaN values are skipped by every mean; the "
        "table of empty cases counts them.",
        f"- Lower is better for {lower}; higher for the others.",
    ]


def paired_notes(reference: str) -> list[str]:
    return [
        f"- Paired tests: cases are matched by case id; Δ = trainer − `{reference}` (positive Δ is better except "
        f"for {', '.join(sorted(LOWER_IS_BETTER))}). A case's `mean` is the mean over its foreground classes, "
        "skipping NaN classes. Pairs with NaN in either trainer are excluded and counted in 'excluded (NaN)'. "
        "Zero differences are dropped by the test (scipy's `zero_method='wilcox'`); W = min(W+, W−).",
        "- p (Holm): Holm's step-down correction over the trainers compared with the reference, separately for "
        "each metric and class (the family is 'every trainer against the same baseline').",
        f"- 95% CI: percentile bootstrap of the mean paired difference, cases resampled with replacement, "
        f"{BOOTSTRAP_RESAMPLES:,} resamples, numpy `default_rng({BOOTSTRAP_SEED})`.",
        f"- Run-to-run spread: identical nnU-Net trainings differ by up to ~1.8 Dice points on small datasets "
        f"(nnU-Net issue #2624; training is non-deterministic on purpose); {SPREAD_RULE}. Such a difference "
        f"cannot be attributed to the trainer. The verdict calls a difference outside the spread better or worse "
        f"only when its Holm-adjusted p is also below {ALPHA}.",
    ]
