"""`nnunet-lmnet compare`: cross-validation comparison of several trainers on one dataset and configuration.

Reads ``<nnUNet_results>/<Dataset>/<trainer>__<plans>__<configuration>/fold_<k>/validation/summary.json`` of every
requested fold and writes, into the output folder:

* ``comparison.md``   - the report (also printed): folds, model size, Dice/IoU (and HD95/NSD with --boundary)
  mean ± std over folds, paired per-case tests against the first trainer, and the notes that define all of it;
* ``comparison.csv``  - one row per trainer x metric x class: n_folds, mean, std, the per-fold values, parameters,
  MACs, FLOPs and missing folds;
* ``paired_tests.csv`` - one row per trainer x metric x class: n, excluded pairs, median/mean difference, W, p;
* ``per_case.csv``    - one row per trainer x fold x case x class (class ``mean`` = mean over foreground classes);
* ``dice_per_case.png`` - box + strip plot of per-case Dice per trainer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..nnunet_paths import DEFAULT_FOLDS, class_names, model_folder, require_env_folder, resolve_dataset_name, sort_class_keys
from ..report_output import atomic_path, atomic_write_text, fmt_count, fmt_mean_std, fmt_num, fmt_p, md_table, refuse_existing

OUTPUT_FILES = ("comparison.md", "comparison.csv", "paired_tests.csv", "per_case.csv", "dice_per_case.png")
OVERLAP_METRICS = ("Dice", "IoU")
BOUNDARY_METRICS = ("HD95", "NSD")
LOWER_IS_BETTER = {"HD95"}


@dataclass
class CompareOptions:
    dataset: str
    configuration: str
    trainers: list[str]
    plans: str = "nnUNetPlans"
    folds: list[int] = field(default_factory=lambda: list(DEFAULT_FOLDS))
    out: Path | None = None
    overwrite: bool = False
    flops: bool = False
    boundary: bool = False
    nsd_tolerance: float = 2.0
    gt_folder: Path | None = None
    num_processes: int = 1
    plot: bool = True


@dataclass
class CompareResult:
    out_dir: Path
    markdown: str
    summary: object  # pandas.DataFrame
    paired: object
    per_case: object
    model_info: dict


def default_out_dir(results: Path, dataset_name: str, configuration: str, plans: str) -> Path:
    suffix = configuration if plans == "nnUNetPlans" else f"{plans}__{configuration}"
    return results / dataset_name / f"comparison_{suffix}"


# ------------------------------------------------------------------------------------------------ model size
def model_size(run, want_flops: bool) -> dict:
    from ..benchmark.complexity import count_parameters, first_checkpoint, model_macs

    info = {"params": math.nan, "macs": math.nan, "flops": math.nan, "checkpoint": None, "input_shape": None}
    found = first_checkpoint(run.folder, run.finished + [k for k in run.requested_folds if k not in run.finished])
    if found is None:
        return info
    fold, ckpt = found
    info["checkpoint"] = str(ckpt)
    info["params"] = count_parameters(ckpt)
    if want_flops:
        macs, shape = model_macs(run.folder, fold)
        info.update(macs=macs, flops=2 * macs, input_shape=list(shape))
    return info


# ------------------------------------------------------------------------------------------------ boundary
def _gt_folder(opts: CompareOptions, dataset_name: str) -> Path | None:
    import os

    if opts.gt_folder is not None:
        if not Path(opts.gt_folder).is_dir():
            raise UserError(f"--gt-folder {opts.gt_folder} is not a folder.")
        return Path(opts.gt_folder)
    pre = os.environ.get("nnUNet_preprocessed")
    if pre and (Path(pre) / dataset_name / "gt_segmentations").is_dir():
        return Path(pre) / dataset_name / "gt_segmentations"
    return None


def boundary_jobs(run, case_rows: list[dict], gt_folder: Path | None, tolerance: float) -> list[tuple]:
    """One job per validation case of ``run``: (trainer, fold, case, prediction, reference, reader, classes, ...)."""
    from .boundary import ignore_label_of, reader_for_model

    class_keys = sort_class_keys({r["class"] for r in case_rows})
    seen, jobs = set(), []
    for r in case_rows:
        key = (r["fold"], r["case"])
        if key in seen:
            continue
        seen.add(key)
        pred_name = Path(r["prediction_file"]).name
        pred = run.folder / f"fold_{r['fold']}" / "validation" / pred_name
        if not pred.is_file():
            raise UserError(
                f"--boundary needs the validation predictions, but {pred} is missing. Re-create them with "
                f"`nnUNetv2_train <dataset> <configuration> {r['fold']} -tr {run.trainer} --val`."
            )
        ref = None
        if gt_folder is not None:
            ref = gt_folder / (r["case"] + (run.file_ending or Path(pred_name).suffix))
            if not ref.is_file():
                ref = gt_folder / pred_name
        if ref is None or not ref.is_file():
            fallback = Path(r["reference_file"]) if r["reference_file"] else None
            if fallback is not None and fallback.is_file():
                ref = fallback
            else:
                where = gt_folder if gt_folder is not None else "$nnUNet_preprocessed/<Dataset>/gt_segmentations"
                raise UserError(f"no reference segmentation for case {r['case']} in {where}. Set "
                                f"nnUNet_preprocessed or pass --gt-folder with the reference label files.")
        jobs.append([run.trainer, r["fold"], r["case"], str(pred), str(ref)])
    if not jobs:
        return []
    reader = reader_for_model(run.folder, run.dataset_json, jobs[0][3])
    ignore = ignore_label_of(run.dataset_json)
    return [tuple(j + [reader, class_keys, tolerance, ignore]) for j in jobs]


# ------------------------------------------------------------------------------------------------ tables
def _add_case_means(case_df, metrics):
    """Class 'mean' rows per (trainer, fold, case): mean over foreground classes, NaN classes skipped."""
    import pandas as pd

    cols = [m for m in metrics if m in case_df.columns]
    g = case_df[case_df["class"] != "mean"].groupby(["trainer", "fold", "case"], sort=False)[cols]
    means = g.mean().reset_index()  # pandas' mean skips NaN: a case's classes that are empty in ref and pred
    means["class"] = "mean"
    return pd.concat([case_df, means], ignore_index=True)


def _fold_boundary_means(case_df):
    """Per trainer x fold x class: mean over cases (NaN skipped); class 'mean' = mean over the class means."""
    import pandas as pd

    sub = case_df[case_df["class"] != "mean"]
    per_class = sub.groupby(["trainer", "fold", "class"], sort=False)[list(BOUNDARY_METRICS)].mean().reset_index()
    overall = per_class.groupby(["trainer", "fold"], sort=False)[list(BOUNDARY_METRICS)].mean().reset_index()
    overall["class"] = "mean"
    return pd.concat([per_class, overall], ignore_index=True)


def summarize(fold_df, runs, metrics, model_info) -> "object":
    import pandas as pd

    from .stats import mean_std

    rows = []
    all_folds = sorted({k for r in runs for k in r.requested_folds})
    for run in runs:
        sub = fold_df[fold_df["trainer"] == run.trainer]
        for metric in metrics:
            if metric not in sub.columns:
                continue
            for cls in list(sort_class_keys(c for c in sub["class"].unique() if c != "mean")) + ["mean"]:
                s = sub[sub["class"] == cls]
                by_fold = {int(f): float(v) for f, v in zip(s["fold"], s[metric])}
                mean, std, n = mean_std(by_fold.values())
                row = {"trainer": run.trainer, "metric": metric, "class": cls, "n_folds": n, "mean": mean,
                       "std": std}
                for k in all_folds:
                    row[f"fold_{k}"] = by_fold.get(k, math.nan)
                info = model_info[run.trainer]
                row.update(params=info["params"], macs=info["macs"], flops=info["flops"],
                           missing_folds=" ".join(str(k) for k in run.missing))
                rows.append(row)
    return pd.DataFrame(rows)


def paired_table(case_df, trainers: list[str], metrics) -> tuple["object", dict]:
    """Wilcoxon signed-rank tests of every trainer against trainers[0], paired by case id."""
    import pandas as pd

    from .stats import paired_wilcoxon

    cols = [m for m in metrics if m in case_df.columns]
    per_case = case_df.groupby(["trainer", "case", "class"], sort=False)[cols].mean().reset_index()
    folds_per_case = case_df.groupby(["trainer", "case"])["fold"].nunique()
    duplicates = {t: int((n > 1).sum()) for t, n in folds_per_case.groupby(level="trainer")}
    ref_name = trainers[0]
    ref = per_case[per_case["trainer"] == ref_name].set_index(["case", "class"])
    rows = []
    for t in trainers[1:]:
        other = per_case[per_case["trainer"] == t].set_index(["case", "class"])
        common = other.index.intersection(ref.index)
        for metric in cols:
            classes = ["mean"] + sort_class_keys(c for c in per_case["class"].unique() if c != "mean")
            for cls in classes:
                idx = [i for i in common if i[1] == cls]
                if not idx:
                    continue
                res = paired_wilcoxon(other.loc[idx, metric].to_numpy(float), ref.loc[idx, metric].to_numpy(float))
                res.update({"trainer": t, "reference": ref_name, "metric": metric, "class": cls,
                            "n_cases_common": len(idx)})
                rows.append(res)
    cols_out = ["trainer", "reference", "metric", "class", "n_cases_common", "n", "n_excluded", "median_diff",
                "mean_diff", "statistic", "p_value", "note"]
    return pd.DataFrame(rows, columns=cols_out), duplicates


# ------------------------------------------------------------------------------------------------ markdown
def _class_header(key: str, names: dict[str, str]) -> str:
    if key == "mean":
        return "mean"
    name = names.get(key)
    return f"{name} ({key})" if name else key


def build_markdown(opts, dataset_name, runs, summary, paired, model_info, names, boundary_counts, duplicates,
                   png_name: str | None) -> str:
    trainers = [r.trainer for r in runs]
    lines = [f"# Cross-validation comparison: {dataset_name}, {opts.configuration}", "",
             f"Plans: `{opts.plans}` · folds requested: {', '.join(map(str, opts.folds))} · "
             f"reference trainer (first `-tr`): `{trainers[0]}`", ""]

    lines += ["## Folds and model size", ""]
    head = ["Trainer", "Finished folds", "Missing folds", "Parameters"]
    if opts.flops:
        head += ["MACs", "FLOPs", "Input"]
    rows = []
    for r in runs:
        info = model_info[r.trainer]
        row = [f"`{r.trainer}`", f"{len(r.finished)}/{len(r.requested_folds)} ({', '.join(map(str, r.finished))})",
               ", ".join(map(str, r.missing)) or "none", fmt_count(info["params"])]
        if opts.flops:
            row += [fmt_count(info["macs"]), fmt_count(info["flops"]),
                    "×".join(map(str, info["input_shape"][1:])) if info["input_shape"] else "n/a"]
        rows.append(row)
    lines += [md_table(head, rows), ""]

    metric_titles = {"Dice": "Dice", "IoU": "IoU", "HD95": "HD95 [mm] (lower is better)",
                     "NSD": f"NSD at {opts.nsd_tolerance:g} mm"}
    for metric in [m for m in ("Dice", "IoU", "HD95", "NSD") if m in set(summary["metric"])]:
        sub = summary[summary["metric"] == metric]
        classes = [c for c in sort_class_keys(c for c in sub["class"].unique() if c != "mean")] + ["mean"]
        lines += [f"## {metric_titles[metric]} — mean ± std over folds", ""]
        rows = []
        for t in trainers:
            cells = [f"`{t}`"]
            for c in classes:
                s = sub[(sub["trainer"] == t) & (sub["class"] == c)]
                cells.append(fmt_mean_std(s["mean"].iloc[0], s["std"].iloc[0], 2 if metric == "HD95" else 4)
                             if len(s) else "–")
            rows.append(cells)
        lines += [md_table(["Trainer"] + [_class_header(c, names) for c in classes], rows), ""]

    if len(trainers) > 1:
        lines += [f"## Paired per-case comparison with `{trainers[0]}` (Wilcoxon signed-rank, two-sided)", ""]
        rows = []
        for _, p in paired.iterrows():
            digits = 2 if p["metric"] == "HD95" else 4
            rows.append([f"`{p['trainer']}`", p["metric"], _class_header(p["class"], names), str(p["n"]),
                         str(p["n_excluded"]), fmt_num(p["median_diff"], digits), fmt_num(p["mean_diff"], digits),
                         fmt_num(p["statistic"], 1), fmt_p(p["p_value"]) + (f" ({p['note']})" if p["note"] else "")])
        lines += [md_table(["Trainer", "Metric", "Class", "n pairs", "excluded (NaN)", "median Δ", "mean Δ", "W",
                            "p"], rows, align_right_from=3), ""]

    if boundary_counts:
        lines += ["## Boundary metrics: cases with an empty class", ""]
        rows = [[f"`{t}`", _class_header(c, names), str(v.get("both_empty", 0)), str(v.get("pred_empty", 0)),
                 str(v.get("ref_empty", 0))] for (t, c), v in boundary_counts.items()]
        lines += [md_table(["Trainer", "Class", "both empty (excluded)", "prediction empty", "reference empty"],
                           rows, align_right_from=2), ""]

    if png_name:
        lines += [f"![Per-case Dice per trainer]({png_name})", ""]

    lines += ["## Notes", "",
              "- Dice and IoU per fold are nnU-Net's own numbers from `fold_<k>/validation/summary.json` (mean over "
              "the fold's validation cases, cases with an empty reference *and* prediction skipped); `mean` is "
              "nnU-Net's `foreground_mean`. mean ± std are taken over the finished folds; std is the sample "
              "standard deviation (ddof = 1) and is omitted when only one fold is finished.",
              f"- Paired tests: cases are matched by case id over all finished folds of both trainers; Δ = trainer "
              f"− `{trainers[0]}` (positive Δ is better for Dice, IoU and NSD, negative Δ is better for HD95). "
              "A case's `mean` is the mean over its foreground classes, skipping classes that are NaN. Pairs with "
              "NaN in either trainer (empty reference and prediction; for HD95 also one-sided empty) are excluded "
              "and counted in 'excluded (NaN)'. Zero differences are dropped by the test (scipy's "
              "`zero_method='wilcox'`); W = min(W+, W−). p-values are not corrected for multiple comparisons.",
              "- Parameters are counted from `checkpoint_final.pth` (`network_weights`), BatchNorm running "
              "statistics excluded."]
    if opts.flops:
        from ..benchmark.complexity import FLOPS_NOTE

        lines.append(f"- {FLOPS_NOTE}")
    if opts.boundary:
        lines.append(
            f"- HD95 and NSD are computed here from `fold_<k>/validation/` predictions against the references, "
            f"with MONAI (HD95: symmetric, larger of the two directed 95th percentiles of boundary distances; NSD: "
            f"surface Dice at {opts.nsd_tolerance:g} mm with DeepMind-style surface elements), in mm using the "
            f"reference's spacing (pixels for 2D natural images). Per fold: mean over cases; `mean` = mean over "
            f"classes. Both masks empty: NaN, excluded. One mask empty: NSD = 0 and HD95 undefined (NaN, excluded "
            f"from HD95 means and counted above).")
    dup = {t: n for t, n in (duplicates or {}).items() if n}
    if dup:
        lines.append("- Cases validated in more than one fold were averaged before pairing: "
                     + ", ".join(f"`{t}`: {n}" for t, n in dup.items()) + ".")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ entry point
def run_compare(opts: CompareOptions) -> CompareResult:
    import pandas as pd

    from .results import load_run

    if not opts.trainers:
        raise UserError("give at least one trainer with -tr.")
    if len(set(opts.trainers)) != len(opts.trainers):
        raise UserError(f"-tr lists a trainer twice: {' '.join(opts.trainers)}.")
    if opts.nsd_tolerance < 0 or not math.isfinite(opts.nsd_tolerance):
        raise UserError(f"--nsd-tolerance must be a finite number >= 0 (mm), got {opts.nsd_tolerance}.")
    results = require_env_folder("nnUNet_results")
    dataset_name = resolve_dataset_name(opts.dataset)

    runs = [load_run(model_folder(results, dataset_name, t, opts.plans, opts.configuration), t, opts.folds)
            for t in opts.trainers]

    out_dir = Path(opts.out) if opts.out else default_out_dir(results, dataset_name, opts.configuration, opts.plans)
    files = [f for f in OUTPUT_FILES if opts.plot or not f.endswith(".png")]
    refuse_existing([out_dir / f for f in files], opts.overwrite)

    dataset_json = next((r.dataset_json for r in runs if r.dataset_json), {})
    names = class_names(dataset_json)

    fold_df = pd.DataFrame([row for r in runs for row in r.fold_rows()])
    case_rows = {r.trainer: r.case_rows() for r in runs}
    case_df = pd.DataFrame([row for r in runs for row in case_rows[r.trainer]])
    if case_df.empty:
        raise UserError("the summary.json files list no cases (metric_per_case is empty); nothing to compare.")

    metrics = list(OVERLAP_METRICS)
    boundary_counts = {}
    if opts.boundary:
        from .boundary import run_jobs

        gt = _gt_folder(opts, dataset_name)
        jobs = [j for r in runs for j in boundary_jobs(r, case_rows[r.trainer], gt, opts.nsd_tolerance)]
        bdf = pd.DataFrame(run_jobs(jobs, opts.num_processes))  # one process pool for all trainers
        case_df = case_df.merge(bdf, on=["trainer", "fold", "case", "class"], how="left")
        fold_df = fold_df.merge(_fold_boundary_means(case_df), on=["trainer", "fold", "class"], how="left")
        metrics += list(BOUNDARY_METRICS)
        for (t, c), s in case_df.groupby(["trainer", "class"], sort=False)["boundary_status"]:
            counts = s.value_counts().to_dict()
            if any(counts.get(k, 0) for k in ("both_empty", "pred_empty", "ref_empty")):
                boundary_counts[(t, c)] = counts
    case_df = _add_case_means(case_df, metrics)

    model_info = {r.trainer: model_size(r, opts.flops) for r in runs}
    summary = summarize(fold_df, runs, metrics, model_info)
    paired, duplicates = paired_table(case_df, opts.trainers, metrics)

    png = "dice_per_case.png" if opts.plot else None
    markdown = build_markdown(opts, dataset_name, runs, summary, paired, model_info, names, boundary_counts,
                              duplicates, png)

    out_dir.mkdir(parents=True, exist_ok=True)
    per_case_out = case_df.drop(columns=["prediction_file", "reference_file"], errors="ignore")
    per_case_out.insert(list(per_case_out.columns).index("class") + 1, "class_name",
                        per_case_out["class"].map(lambda k: names.get(k, "" if k != "mean" else "mean")))
    summary_out = summary.copy()
    summary_out.insert(3, "class_name", summary_out["class"].map(lambda k: names.get(k, "" if k != "mean"
                                                                                    else "mean")))
    summary_out.insert(1, "plans", opts.plans)
    summary_out.insert(2, "configuration", opts.configuration)
    for name, df in (("comparison.csv", summary_out), ("paired_tests.csv", paired), ("per_case.csv", per_case_out)):
        with atomic_path(out_dir / name) as tmp:
            df.to_csv(tmp, index=False)
    if opts.plot:
        from .plotting import plot_dice_per_case

        class_keys = sort_class_keys(c for c in case_df["class"].unique() if c != "mean")
        n_folds = sorted({k for r in runs for k in r.finished})
        title = (f"{dataset_name} · {opts.configuration} · per-case validation Dice "
                 f"(folds {', '.join(map(str, n_folds))})")
        plot_dice_per_case(case_df, opts.trainers, class_keys, {k: names.get(k, k) for k in class_keys}, title,
                           out_dir / "dice_per_case.png")
    atomic_write_text(out_dir / "comparison.md", markdown)
    return CompareResult(out_dir=out_dir, markdown=markdown, summary=summary, paired=paired, per_case=case_df,
                         model_info=model_info)
