"""`nnunet-lmnet compare`: cross-validation comparison of several trainers on one dataset and configuration.

Reads ``<nnUNet_results>/<Dataset>/<trainer>__<plans>__<configuration>/fold_<k>/validation/summary.json`` of every
requested fold. Trainers are compared on what they share: the folds every trainer finished and, within them, the
validation cases every trainer has (what is left out is listed; nothing shared is an error). Writes, into the
output folder:

* ``comparison.md``   - the report (also printed): folds, model size, what was left out, a plain verdict on mean
  Dice, Dice/IoU/Precision/Recall/Accuracy/RAD (and HD95/NSD with --boundary) mean ± std over folds, paired per-case
  tests against the first trainer (Holm-corrected, bootstrap CI, run-to-run spread flag), and the notes that
  define all of it;
* ``comparison.csv``  - one row per trainer x metric x class: n_folds, mean, std, the per-fold values, parameters,
  MACs, FLOPs, missing folds and folds left out;
* ``paired_tests.csv`` - one row per trainer x metric x class: n, excluded pairs, median/mean difference, bootstrap
  CI, W, p, Holm-adjusted p, run-to-run spread flag;
* ``per_case.csv``    - one row per trainer x fold x case x class (class ``mean`` = mean over foreground classes);
* ``dice_per_case.png`` - box + strip plot of per-case Dice per trainer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..nnunet_paths import DEFAULT_FOLDS, class_names, model_folder, require_env_folder, resolve_dataset_name, sort_class_keys
from ..report_output import atomic_path, atomic_write_text, fmt_count, md_table, refuse_existing
from .aggregate import BOUNDARY_METRICS, OVERLAP_METRICS

OUTPUT_FILES = ("comparison.md", "comparison.csv", "paired_tests.csv", "per_case.csv", "dice_per_case.png")
REPORT_METRICS = OVERLAP_METRICS + BOUNDARY_METRICS


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
    selection: object = None  # shared_cases.SharedSelection


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


# ------------------------------------------------------------------------------------------------ shared cases
def shared_case_rows(runs) -> tuple[dict[str, list[dict]], object]:
    """Per trainer, the case rows restricted to the folds and cases every trainer has; and the selection."""
    from .shared_cases import shared_selection

    case_rows = {r.trainer: r.case_rows() for r in runs}
    for r in runs:
        if not case_rows[r.trainer]:
            files = ", ".join(str(r.summary_file(k)) for k in r.finished)
            raise UserError(f"the summary.json files of {r.trainer} list no cases (metric_per_case is empty): "
                            f"{files}. Re-run the validation (nnUNetv2_train ... --val) to rewrite them.")
    sel = shared_selection({r.trainer: r.finished for r in runs},
                           {t: {(row["fold"], row["case"]) for row in rows} for t, rows in case_rows.items()})
    shared = {t: [row for row in rows if (row["fold"], row["case"]) in sel.cases] for t, rows in case_rows.items()}
    return shared, sel


def case_table(rows: list[dict]):
    """Per-case DataFrame with the count metrics (Precision, Recall, Accuracy, RAD) added."""
    import pandas as pd

    from .overlap_metrics import add_count_metrics

    return add_count_metrics(pd.DataFrame(rows))


def boundary_counts_of(case_df) -> dict:
    counts = {}
    for (t, c), s in case_df.groupby(["trainer", "class"], sort=False)["boundary_status"]:
        v = s.value_counts().to_dict()
        if any(v.get(k, 0) for k in ("both_empty", "pred_empty", "ref_empty")):
            counts[(t, c)] = v
    return counts


def with_class_names(df, names: dict[str, str], after: str = "class"):
    out = df.copy()
    out.insert(list(out.columns).index(after) + 1, "class_name",
               out["class"].map(lambda k: names.get(k, "" if k != "mean" else "mean")))
    return out


# ------------------------------------------------------------------------------------------------ markdown
def _folds_section(opts, runs, sel, model_info) -> list[str]:
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
    lines = ["## Folds and model size", "", md_table(head, rows), ""]
    return lines + _shared_sentence(sel, "validation cases")


def _shared_sentence(sel, what: str) -> list[str]:
    from .shared_cases import describe_left_out

    n = len(sel.cases)
    folds = ", ".join(map(str, sel.folds))
    if not sel.anything_left_out:
        return [f"Every trainer is compared on the same folds ({folds}) and the same {n} {what}; nothing was left "
                f"out.", ""]
    return [f"**Compared on what every trainer has: fold(s) {folds}, {n} {what}.** Left out:", ""] + \
        describe_left_out(sel) + [""]


def build_markdown(opts, dataset_name, runs, sel, summary, paired, model_info, names, empty, boundary_counts,
                   duplicates, png_name: str | None) -> str:
    from . import report_sections as rs

    trainers = [r.trainer for r in runs]
    lines = [f"# Cross-validation comparison: {dataset_name}, {opts.configuration}", "",
             f"Plans: `{opts.plans}` · folds requested: {', '.join(map(str, opts.folds))} · "
             f"reference trainer (first `-tr`): `{trainers[0]}`", ""]
    lines += _folds_section(opts, runs, sel, model_info)
    lines += rs.verdict_section(paired, trainers, "validation cases")
    lines += rs.metric_tables(summary, trainers, REPORT_METRICS, names, "folds", opts.nsd_tolerance)
    lines += rs.paired_section(paired, trainers, names, "validation cases")
    lines += rs.empty_cases_section(empty, names)
    if boundary_counts:
        lines += ["## Boundary metrics: cases with an empty class", ""]
        rows = [[f"`{t}`", rs.class_header(c, names), str(v.get("both_empty", 0)), str(v.get("pred_empty", 0)),
                 str(v.get("ref_empty", 0))] for (t, c), v in boundary_counts.items()]
        lines += [md_table(["Trainer", "Class", "both empty (excluded)", "prediction empty", "reference empty"],
                           rows, align_right_from=2), ""]
    if png_name:
        lines += [f"![Per-case Dice per trainer]({png_name})", ""]

    lines += ["## Notes", "",
              "- Per fold, every overlap metric is aggregated as nnU-Net aggregates `summary.json`: per class the "
              "mean over the fold's compared validation cases skipping NaN, `mean` = the mean over the class means "
              "(identical to nnU-Net's `mean` / `foreground_mean` when no case was left out). mean ± std are taken "
              "over the compared folds; std is the sample standard deviation (ddof = 1) and is omitted when only one "
              "fold is compared.",
              "- Folds and cases: only the folds every trainer finished are compared, and within them only the "
              "validation cases every trainer has; anything else is listed above as left out."]
    lines += rs.metric_notes() + rs.paired_notes(trainers[0])
    lines.append("- Parameters are counted from `checkpoint_final.pth` (`network_weights`), BatchNorm running "
                 "statistics excluded.")
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

    from .aggregate import add_case_means, fold_means, summarize_folds
    from .overlap_metrics import empty_counts
    from .paired_tests import paired_table
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

    case_rows, sel = shared_case_rows(runs)
    case_df = case_table([row for r in runs for row in case_rows[r.trainer]])

    metrics = list(OVERLAP_METRICS)
    boundary_counts = {}
    if opts.boundary:
        from .boundary import run_jobs

        gt = _gt_folder(opts, dataset_name)
        jobs = [j for r in runs for j in boundary_jobs(r, case_rows[r.trainer], gt, opts.nsd_tolerance)]
        bdf = pd.DataFrame(run_jobs(jobs, opts.num_processes))  # one process pool for all trainers
        case_df = case_df.merge(bdf, on=["trainer", "fold", "case", "class"], how="left")
        metrics += list(BOUNDARY_METRICS)
        boundary_counts = boundary_counts_of(case_df)
    empty = empty_counts(case_df, ["trainer", "class"])
    case_df = add_case_means(case_df, metrics)

    model_info = {r.trainer: model_size(r, opts.flops) for r in runs}
    summary = summarize_folds(fold_means(case_df, metrics), opts.trainers, metrics, sel.folds)
    for col in ("params", "macs", "flops"):
        summary[col] = summary["trainer"].map(lambda t: model_info[t][col])
    by_run = {r.trainer: r for r in runs}
    summary["missing_folds"] = summary["trainer"].map(lambda t: " ".join(map(str, by_run[t].missing)))
    summary["left_out_folds"] = summary["trainer"].map(lambda t: " ".join(map(str, sel.left_out_folds[t])))
    summary["left_out_cases"] = summary["trainer"].map(lambda t: len(sel.left_out_cases[t]))
    paired, duplicates = paired_table(case_df, opts.trainers, metrics)

    png = "dice_per_case.png" if opts.plot else None
    markdown = build_markdown(opts, dataset_name, runs, sel, summary, paired, model_info, names, empty,
                              boundary_counts, duplicates, png)

    out_dir.mkdir(parents=True, exist_ok=True)
    per_case_out = with_class_names(case_df.drop(columns=["prediction_file", "reference_file"], errors="ignore"),
                                    names)
    summary_out = with_class_names(summary, names)
    summary_out.insert(1, "plans", opts.plans)
    summary_out.insert(2, "configuration", opts.configuration)
    for name, df in (("comparison.csv", summary_out), ("paired_tests.csv", paired), ("per_case.csv", per_case_out)):
        with atomic_path(out_dir / name) as tmp:
            df.to_csv(tmp, index=False)
    if opts.plot:
        from .plotting import plot_dice_per_case

        class_keys = sort_class_keys(c for c in case_df["class"].unique() if c != "mean")
        title = (f"{dataset_name} · {opts.configuration} · per-case validation Dice "
                 f"(folds {', '.join(map(str, sel.folds))})")
        plot_dice_per_case(case_df, opts.trainers, class_keys, {k: names.get(k, k) for k in class_keys}, title,
                           out_dir / "dice_per_case.png")
    atomic_write_text(out_dir / "comparison.md", markdown)
    return CompareResult(out_dir=out_dir, markdown=markdown, summary=summary, paired=paired, per_case=case_df,
                         model_info=model_info, selection=sel)
