"""`nnunet-lmnet cross-evaluate`: zero-shot evaluation of trained models on an unseen dataset of the same modality
(LGMSNet's Table 2 protocol: train on BUSI, test on BUS without retraining, and so on).

For every trainer, the model folder ``<nnUNet_results>/<SOURCE>/<trainer>__<plans>__<configuration>`` predicts the
target's test images with nnU-Net's own ``nnUNetPredictor`` (the source's plans and preprocessing; the -f folds
ensembled as ``nnUNetv2_predict`` does), and nnU-Net's ``compute_metrics_on_folder`` scores the predictions against
the target's labels into a ``summary.json`` of nnU-Net's format. The report puts each trainer's in-domain
cross-validation result (its ``fold_<k>/validation/summary.json``) beside the zero-shot result and compares the
trainers on the target cases as ``compare`` does. Output, in
``<nnUNet_results>/<SOURCE>/cross_evaluation_<configuration>__<TARGET>/`` (or --out):

* ``predictions/<trainer>/``   - the predicted segmentations and nnU-Net's ``summary.json``;
* ``cross_evaluation.md``      - the report (also printed);
* ``cross_evaluation.csv``     - per trainer x metric x class: in-domain CV mean ± std over folds and zero-shot
  mean ± std over the target cases;
* ``paired_tests.csv``, ``per_case.csv``, ``dice_per_case.png`` - as in ``compare``, on the target cases.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..nnunet_paths import (DEFAULT_FOLDS, EXT_TRAINER_HINT, class_names, load_json_file, model_folder,
                            require_env_folder, resolve_dataset_name, sort_class_keys)
from ..report_output import atomic_path, atomic_write_text, fmt_count, fmt_mean_std, is_nan, md_table, refuse_existing
from .aggregate import OVERLAP_METRICS

REPORT_FILES = ("cross_evaluation.md", "cross_evaluation.csv", "paired_tests.csv", "per_case.csv",
                "dice_per_case.png")
PREDICTIONS = "predictions"


@dataclass
class CrossEvaluateOptions:
    dataset: str
    configuration: str
    trainers: list[str]
    target: str
    plans: str = "nnUNetPlans"
    folds: list[int] = field(default_factory=lambda: list(DEFAULT_FOLDS))
    checkpoint: str = "checkpoint_final.pth"
    target_split: str = "auto"
    out: Path | None = None
    overwrite: bool = False
    device: str = "auto"
    num_processes_preprocessing: int = 3
    num_processes_export: int = 3
    num_processes_eval: int = 3
    disable_tta: bool = False
    plot: bool = True


@dataclass
class CrossEvaluateResult:
    out_dir: Path
    markdown: str
    table: object  # pandas.DataFrame: cross_evaluation.csv
    paired: object
    per_case: object
    target: object  # target_dataset.TargetDataset


def default_out_dir(results: Path, source: str, configuration: str, plans: str, target: str) -> Path:
    suffix = configuration if plans == "nnUNetPlans" else f"{plans}__{configuration}"
    return results / source / f"cross_evaluation_{suffix}__{target}"


# ------------------------------------------------------------------------------------------------ source models
@dataclass
class SourceModel:
    trainer: str
    folder: Path
    run: object  # results.ModelRun: the in-domain CV summaries
    plans: dict
    dataset_json: dict


def load_source_model(results: Path, source: str, trainer: str, opts: CrossEvaluateOptions) -> SourceModel:
    from .results import load_run

    folder = model_folder(results, source, trainer, opts.plans, opts.configuration)
    run = load_run(folder, trainer, opts.folds, require_finished=False)  # UserError if the folder is missing
    missing = [k for k in opts.folds if not (folder / f"fold_{k}" / opts.checkpoint).is_file()]
    if missing:
        raise UserError(f"{trainer}: fold(s) {', '.join(map(str, missing))} have no {opts.checkpoint} in {folder}. "
                        f"Train them (nnUNetv2_train {source} {opts.configuration} FOLD -tr {trainer}) or choose "
                        f"the trained folds with -f.")
    return SourceModel(trainer=trainer, folder=folder, run=run,
                       plans=load_json_file(folder / "plans.json", "plans.json"),
                       dataset_json=load_json_file(folder / "dataset.json", "dataset.json"))


def check_models_against_target(models: list[SourceModel], target, source: str, configuration: str) -> list[str]:
    """target_dataset.check_compatible once per distinct (reader, labels, channels) of the models."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from .boundary import reader_for_model
    from .target_dataset import check_compatible

    notes: list[str] = []
    checked = set()
    example = str(next(iter(target.cases.values()))[0])
    for m in models:
        pm = PlansManager(m.plans)
        if configuration not in pm.available_configurations:
            raise UserError(f"{m.folder / 'plans.json'} has no configuration '{configuration}'.")
        cm = pm.get_configuration(configuration)
        if cm.previous_stage_name is not None:
            raise UserError(f"{configuration} is a cascade stage (it needs the predictions of "
                            f"{cm.previous_stage_name}); cross-evaluate a configuration without a previous stage.")
        lm = pm.get_label_manager(m.dataset_json)
        reader = reader_for_model(m.folder, m.dataset_json, example)
        n_in = determine_num_input_channels(pm, cm, m.dataset_json)
        key = (reader.__name__, tuple(lm.all_labels), lm.ignore_label, n_in, m.dataset_json.get("file_ending"))
        if key in checked:
            continue
        checked.add(key)
        for note in check_compatible(target, source, m.dataset_json, lm, reader, n_in):
            if note not in notes:
                notes.append(note)
    return notes


# ------------------------------------------------------------------------------------------------ predict + score
def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("-device cuda: no CUDA device is available here; use -device cpu.")
    return torch.device(name)


def predict_target(model: SourceModel, target, out_folder: Path, opts: CrossEvaluateOptions, device) -> None:
    """nnU-Net's predictor on the target's images with the -f folds of one model (ensembled as nnU-Net does)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=not opts.disable_tta,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    try:
        predictor.initialize_from_trained_model_folder(str(model.folder), tuple(opts.folds), opts.checkpoint)
    except Exception as e:  # nnU-Net raises RuntimeError, torch.load pickle/zip errors, KeyError, ...
        if "trainer" in str(e).lower() and "find" in str(e).lower():
            raise UserError(f"nnU-Net cannot find the trainer class of {model.folder} ({e}). "
                            f"Run `{EXT_TRAINER_HINT}` and try again.") from None
        raise UserError(f"cannot load the model {model.folder} (folds {', '.join(map(str, opts.folds))}, "
                        f"{opts.checkpoint}): {type(e).__name__}: {e}. Re-train or re-download it.") from None
    cases = list(target.cases)
    inputs = [[str(f) for f in target.cases[c]] for c in cases]
    outputs = [str(out_folder / c) for c in cases]
    out_folder.mkdir(parents=True)
    if opts.num_processes_preprocessing == 0 and opts.num_processes_export == 0:  # as nnUNetv2_predict -npp 0 -nps 0
        predictor.predict_from_files_sequential(inputs, outputs, save_probabilities=False, overwrite=True)
    else:
        predictor.predict_from_files(inputs, outputs, save_probabilities=False, overwrite=True,
                                     num_processes_preprocessing=max(1, opts.num_processes_preprocessing),
                                     num_processes_segmentation_export=max(1, opts.num_processes_export))


def score_predictions(model: SourceModel, target, pred_folder: Path, num_processes: int) -> dict:
    """nnU-Net's compute_metrics_on_folder of the predictions against the target's labels (not yet saved)."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from .boundary import reader_for_model

    lm = PlansManager(model.plans).get_label_manager(model.dataset_json)
    example = str(target.label_file(next(iter(target.cases))))
    reader = reader_for_model(model.folder, model.dataset_json, example)
    regions = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    return compute_metrics_on_folder(str(target.labels_dir), str(pred_folder), None, reader(),
                                     target.file_ending, regions, lm.ignore_label, max(1, num_processes), chill=False)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Replace ``final`` (if any) by ``tmp`` with renames; the old folder is deleted only once the new one is there."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old)


def _fix_paths(json_file: Path, tmp: Path, final: Path) -> None:
    """nnU-Net's record of the prediction arguments names the hidden folder; name the final one."""
    if json_file.is_file():
        atomic_write_text(json_file, json_file.read_text(encoding="utf-8").replace(str(tmp), str(final)))


def _save_summary(result: dict, final: Path) -> Path:
    from nnunetv2.evaluation.evaluate_predictions import save_summary_json

    for entry in result["metric_per_case"]:  # the files now live in the final folder
        entry["prediction_file"] = str(final / Path(entry["prediction_file"]).name)
    with atomic_path(final / "summary.json") as f:
        save_summary_json(result, str(f))
    return final / "summary.json"


# ------------------------------------------------------------------------------------------------ tables
def in_domain_cv(models: list[SourceModel], metrics) -> tuple[object | None, list[str]]:
    """Summary over folds of the models' validation results, on what all trainers share (as in compare)."""
    import pandas as pd

    from .aggregate import add_case_means, fold_means, summarize_folds
    from .compare import case_table, shared_case_rows
    from .shared_cases import describe_left_out

    runs = [m.run for m in models if m.run.finished]
    lacking = [m.trainer for m in models if not m.run.finished]
    notes = []
    if lacking:
        notes.append("No in-domain validation result (no `fold_<k>/validation/summary.json` among the folds "
                     f"{', '.join(map(str, models[0].run.requested_folds))}) for: "
                     + ", ".join(f"`{t}`" for t in lacking) + ".")
    if not runs:
        return None, notes
    try:
        rows, sel = shared_case_rows(runs)
    except UserError as e:
        return None, notes + [f"In-domain CV not shown: {e}"]
    notes.append(f"In-domain CV on fold(s) {', '.join(map(str, sel.folds))}, {len(sel.cases)} validation cases "
                 f"shared by the trainers with a validation result.")
    notes += [line[2:] for line in describe_left_out(sel)]
    case_df = add_case_means(case_table([r for run in runs for r in rows[run.trainer]]), metrics)
    summary = summarize_folds(fold_means(case_df, metrics), [r.trainer for r in runs], metrics, sel.folds)
    return (summary if len(summary) else pd.DataFrame()), notes


def combined_table(cv, zs, trainers: list[str], metrics, opts, source: str, target_name: str):
    import pandas as pd

    rows = []
    for t in trainers:
        for metric in metrics:
            z = zs[(zs["trainer"] == t) & (zs["metric"] == metric)]
            for _, zr in z.iterrows():
                c = cv[(cv["trainer"] == t) & (cv["metric"] == metric) & (cv["class"] == zr["class"])] \
                    if cv is not None and len(cv) else []
                cv_mean = float(c["mean"].iloc[0]) if len(c) else math.nan
                rows.append({"trainer": t, "metric": metric, "class": zr["class"], "source": source,
                             "target": target_name, "plans": opts.plans, "configuration": opts.configuration,
                             "folds": " ".join(map(str, opts.folds)), "cv_available": bool(len(c)),
                             "cv_n_folds": int(c["n_folds"].iloc[0]) if len(c) else 0, "cv_mean": cv_mean,
                             "cv_std": float(c["std"].iloc[0]) if len(c) else math.nan,
                             "zero_shot_n_cases": int(zr["n_cases"]), "zero_shot_mean": float(zr["mean"]),
                             "zero_shot_std": float(zr["std"]), "zero_shot_minus_cv": float(zr["mean"]) - cv_mean})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ markdown
def build_markdown(opts, source, target, models, table, zs, paired, names, empty, notes, cv_notes,
                   model_info, png_name) -> str:
    from . import report_sections as rs

    trainers = [m.trainer for m in models]
    folds = ", ".join(map(str, opts.folds))
    lines = [f"# Zero-shot evaluation: {source} → {target.name}, {opts.configuration}", "",
             f"Models trained on `{source}` (plans `{opts.plans}`, folds {folds} ensembled, `{opts.checkpoint}`) "
             f"predict `{target.name}` without retraining: {len(target.cases)} cases from {target.split_note} "
             f"(`{target.folder}`). Reference trainer (first `-tr`): `{trainers[0]}`.", ""]
    rows = [[f"`{m.trainer}`", folds, ", ".join(map(str, m.run.finished)) or "none",
             fmt_count(model_info[m.trainer]["params"])] for m in models]
    lines += ["## Trainers", "", md_table(["Trainer", "Folds ensembled", "Folds with in-domain validation",
                                           "Parameters"], rows), ""]
    if notes:
        lines += ["Compatibility notes:", ""] + [f"- {n}" for n in notes] + [""]

    lines += [f"## In-domain cross-validation vs zero-shot on {target.name} (`mean` over foreground classes)", ""]
    has_cv = {t: bool(len(table[(table["trainer"] == t) & table["cv_available"]])) for t in trainers}
    rows = []
    for t in trainers:
        for metric in OVERLAP_METRICS:
            r = table[(table["trainer"] == t) & (table["metric"] == metric) & (table["class"] == "mean")]
            if not len(r):
                continue
            r = r.iloc[0]
            d = rs.digits(metric)
            n = int(r["cv_n_folds"])
            if not has_cv[t]:
                cv = "n/a"
            else:
                cv = fmt_mean_std(r["cv_mean"], r["cv_std"], d) + (f" ({n} fold{'s' if n != 1 else ''})" if n else "")
            diff = r["zero_shot_minus_cv"]
            rows.append([f"`{t}`", rs.metric_title(metric), cv,
                         fmt_mean_std(r["zero_shot_mean"], r["zero_shot_std"], d),
                         "–" if is_nan(diff) else f"{diff:+.{d}f}"])
    lines += [md_table(["Trainer", "Metric", "in-domain CV (mean ± std over folds)",
                        f"zero-shot (mean ± std over {len(target.cases)} cases)", "zero-shot − CV"], rows,
                       align_right_from=2), ""]
    lines += [f"- {n}" for n in cv_notes] + ([""] if cv_notes else [])

    lines += rs.verdict_section(paired, trainers, f"zero-shot, {target.name}")
    lines += rs.metric_tables(zs, trainers, OVERLAP_METRICS, names, f"the {len(target.cases)} target cases")
    lines += rs.paired_section(paired, trainers, names, f"zero-shot, {target.name}")
    lines += rs.empty_cases_section(empty, names)
    if png_name:
        lines += [f"![Per-case zero-shot Dice per trainer]({png_name})", ""]
    lines += ["## Notes", "",
              "- Prediction: nnU-Net's `nnUNetPredictor` with the source model's own plans and preprocessing "
              "(resampling to the source's spacing, its normalisation), sliding window with Gaussian weighting, "
              f"test-time mirroring {'off' if opts.disable_tta else 'on'}, the folds' softmax outputs averaged (as "
              "`nnUNetv2_predict -f ...`). Scoring: nnU-Net's `compute_metrics_on_folder` at the target's native "
              "resolution; `predictions/<trainer>/summary.json` is nnU-Net's file.",
              "- Zero-shot mean: per class the mean over the target cases skipping NaN, `mean` = the mean over "
              "the class means (nnU-Net's `foreground_mean`); ± is the sample std over cases (for `mean`: of the "
              "per-case means over foreground classes). In-domain CV: as in `compare` (per-fold means, then mean ± "
              "std over folds).",
              "- Differences from LGMSNet's protocol (U-Bench code): there every image is resized to 256×256, "
              "normalised with ImageNet statistics and scored per image at 256×256; here nnU-Net's preprocessing "
              "of the source is applied and the score is computed on the original image grid. LGMSNet reports the "
              "mean over its 3 training splits; here one model (the -f folds ensembled) per trainer."]
    lines += rs.metric_notes() + rs.paired_notes(trainers[0])
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ entry point
def run_cross_evaluate(opts: CrossEvaluateOptions) -> CrossEvaluateResult:
    import pandas as pd
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json

    from .aggregate import add_case_means, summarize_cases
    from .compare import case_table, model_size, with_class_names
    from .overlap_metrics import empty_counts
    from .paired_tests import paired_table
    from .results import summary_case_rows
    from .target_dataset import load_target

    if not opts.trainers:
        raise UserError("give at least one trainer with -tr.")
    if len(set(opts.trainers)) != len(opts.trainers):
        raise UserError(f"-tr lists a trainer twice: {' '.join(opts.trainers)}.")
    if not opts.folds:
        raise UserError("give at least one fold with -f.")
    results = require_env_folder("nnUNet_results")
    source = resolve_dataset_name(opts.dataset)
    target = load_target(opts.target, opts.target_split)
    models = [load_source_model(results, source, t, opts) for t in opts.trainers]

    out_dir = Path(opts.out) if opts.out else default_out_dir(results, source, opts.configuration, opts.plans,
                                                              target.name)
    report = [out_dir / f for f in REPORT_FILES if opts.plot or not f.endswith(".png")]
    final = {m.trainer: out_dir / PREDICTIONS / m.trainer for m in models}
    refuse_existing(report + list(final.values()), opts.overwrite)
    notes = check_models_against_target(models, target, source, opts.configuration)
    device = _device(opts.device)

    # predict and score into hidden folders; only complete results are moved into place
    # (all predictions first: a model that cannot be loaded stops the run before the slower scoring)
    tmp = {t: out_dir / PREDICTIONS / f".{t}.partial-{os.getpid()}" for t in final}
    out_existed = out_dir.exists()
    try:
        for m in models:
            if tmp[m.trainer].exists():
                shutil.rmtree(tmp[m.trainer])
            print(f"cross-evaluate: {m.trainer} predicts {len(target.cases)} cases of {target.name}", flush=True)
            predict_target(m, target, tmp[m.trainer], opts, device)
        scored = {m.trainer: score_predictions(m, target, tmp[m.trainer], opts.num_processes_eval) for m in models}
        summaries = {}
        for m in models:
            _move_into_place(tmp[m.trainer], final[m.trainer])
            _fix_paths(final[m.trainer] / "predict_from_raw_data_args.json", tmp[m.trainer], final[m.trainer])
            summaries[m.trainer] = load_summary_json(str(_save_summary(scored[m.trainer], final[m.trainer])))
    finally:
        for p in tmp.values():
            if p.exists():
                shutil.rmtree(p, ignore_errors=True)
        for d in (out_dir / PREDICTIONS, out_dir if not out_existed else None):
            if d is not None and d.is_dir() and not any(d.iterdir()):
                d.rmdir()  # folders this run made and left empty

    names = class_names(models[0].dataset_json)
    fold_label = " ".join(map(str, opts.folds))
    rows = [r for m in models for r in summary_case_rows(summaries[m.trainer], m.trainer, fold_label,
                                                         target.file_ending)]
    case_df = case_table(rows)
    empty = empty_counts(case_df, ["trainer", "class"])
    case_df = add_case_means(case_df, OVERLAP_METRICS)
    zs = summarize_cases(case_df, opts.trainers, OVERLAP_METRICS)
    cv, cv_notes = in_domain_cv(models, OVERLAP_METRICS)
    table = combined_table(cv, zs, opts.trainers, OVERLAP_METRICS, opts, source, target.name)
    paired, _ = paired_table(case_df, opts.trainers, OVERLAP_METRICS)
    model_info = {m.trainer: model_size(m.run, False) for m in models}

    png = "dice_per_case.png" if opts.plot else None
    markdown = build_markdown(opts, source, target, models, table, zs, paired, names, empty, notes, cv_notes,
                              model_info, png)
    per_case_out = with_class_names(case_df.drop(columns=["prediction_file", "reference_file"], errors="ignore"),
                                    names).rename(columns={"fold": "folds"})
    for name, df in (("cross_evaluation.csv", with_class_names(table, names)), ("paired_tests.csv", paired),
                     ("per_case.csv", per_case_out)):
        with atomic_path(out_dir / name) as f:
            df.to_csv(f, index=False)
    if opts.plot:
        from .plotting import plot_dice_per_case

        class_keys = sort_class_keys(c for c in case_df["class"].unique() if c != "mean")
        title = f"{source} → {target.name} · {opts.configuration} · zero-shot per-case Dice (folds {fold_label})"
        plot_dice_per_case(case_df, opts.trainers, class_keys, {k: names.get(k, k) for k in class_keys}, title,
                           out_dir / "dice_per_case.png")
    atomic_write_text(out_dir / "cross_evaluation.md", markdown)
    return CrossEvaluateResult(out_dir=out_dir, markdown=markdown, table=table, paired=paired,
                               per_case=pd.DataFrame(case_df), target=target)
