"""`nnunet-lmnet model-card`: a Markdown model card written next to a trained nnU-Net model folder.

Sources: the folder name (trainer, plans, configuration), ``plans.json`` and ``dataset.json`` in the model folder,
``$nnUNet_preprocessed/<Dataset>/splits_final.json`` (if present), the first fold's ``checkpoint_final.pth``
(parameter count, epochs, mirroring axes) and ``debug.json`` (training-time versions and schedule), and every
finished fold's ``validation/summary.json`` (cross-validation Dice).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

from ..errors import UserError
from ..nnunet_paths import DEFAULT_FOLDS, class_names, load_json_file, sort_class_keys, split_model_folder_name
from ..report_output import atomic_write_text, fmt_count, fmt_mean_std, fmt_num, md_table, refuse_existing

DEBUG_KEYS = ("num_epochs", "initial_lr", "weight_decay", "oversample_foreground_percent", "num_iterations_per_epoch",
              "num_val_iterations_per_epoch", "torch_version", "cudnn_version", "device", "gpu_name")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _dims(values) -> str:
    return " × ".join(fmt_num(v, 4).rstrip("0").rstrip(".") if isinstance(v, float) else str(v) for v in values)


def _compact_json(d: dict) -> str:
    """One key per line, values (lists of strides, kernel sizes...) kept on that line."""
    items = [f"  {json.dumps(str(k))}: {json.dumps(v, default=str)}" for k, v in sorted(d.items())]
    return "{\n" + ",\n".join(items) + "\n}"


def _labels_text(dataset_json: dict) -> str:
    parts = []
    for name, value in (dataset_json.get("labels") or {}).items():
        parts.append(f"{name} = {value if not isinstance(value, list) else tuple(value)}")
    return ", ".join(parts) or "n/a"


def _splits_section(dataset_name: str) -> list[str]:
    pre = os.environ.get("nnUNet_preprocessed")
    if not pre:
        return ["`nnUNet_preprocessed` is not set, so `splits_final.json` could not be read.", ""]
    path = Path(pre) / dataset_name / "splits_final.json"
    if not path.is_file():
        return [f"`{path}` not found (nnU-Net writes it when fold 0 starts training).", ""]
    splits = load_json_file(path, "splits file")
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "train" in s and "val" in s for s in splits):
        raise UserError(f"{path} is not an nnU-Net splits file (a list of {{'train': [...], 'val': [...]}}).")
    all_cases = {c for s in splits for c in list(s["train"]) + list(s["val"])}
    rows = [[str(k), str(len(s["train"])), str(len(s["val"]))] for k, s in enumerate(splits)]
    return [f"{len(splits)} folds over {len(all_cases)} cases, from `{path}`.", "",
            md_table(["Fold", "Training cases", "Validation cases"], rows), ""]


def _cv_section(run, names: dict[str, str]) -> list[str]:
    from ..evaluation.stats import mean_std

    if not run.finished:
        return [f"No finished fold among {', '.join(map(str, run.requested_folds))} "
                f"(no `fold_<k>/validation/summary.json`).", ""]
    fold_rows = run.fold_rows()
    classes = sort_class_keys(r["class"] for r in fold_rows if r["class"] != "mean") + ["mean"]
    by = {(r["fold"], r["class"]): r for r in fold_rows}
    header = ["Fold"] + [f"{names[c]} ({c})" if c in names else c for c in classes]
    rows = []
    for k in run.finished:
        rows.append([str(k)] + [fmt_num(by[(k, c)]["Dice"]) if (k, c) in by else "–" for c in classes])
    agg = []
    for c in classes:
        m, s, _ = mean_std([by[(k, c)]["Dice"] for k in run.finished if (k, c) in by])
        agg.append(fmt_mean_std(m, s))
    rows.append(["**mean ± std**"] + agg)
    lines = ["Validation Dice per fold (nnU-Net's `summary.json`; `mean` = foreground mean). mean ± std over the "
             "finished folds, sample std (ddof = 1).", "", md_table(header, rows), ""]
    lines.append(f"Finished folds: {', '.join(map(str, run.finished))}; missing: "
                 f"{', '.join(map(str, run.missing)) or 'none'}.")
    return lines + [""]


def build_model_card(model_dir: Path, with_flops: bool = False, folds=DEFAULT_FOLDS) -> str:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from ..benchmark.complexity import FLOPS_NOTE, count_parameters_in_state_dict, first_checkpoint, load_checkpoint, model_macs
    from ..evaluation.results import load_run

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"MODEL_FOLDER {model_dir} is not a folder.")
    trainer, plans_name, configuration = split_model_folder_name(model_dir)
    plans = load_json_file(model_dir / "plans.json", "plans.json")
    dataset_json = load_json_file(model_dir / "dataset.json", "dataset.json")
    dataset_name = model_dir.resolve().parent.name
    if not dataset_name.startswith("Dataset"):
        dataset_name = plans.get("dataset_name", dataset_name)
    pm = PlansManager(plans)
    if configuration not in pm.available_configurations:
        raise UserError(f"{model_dir / 'plans.json'} has no configuration '{configuration}' "
                        f"(it has {', '.join(pm.available_configurations)}).")
    cm = pm.get_configuration(configuration)
    names = class_names(dataset_json)
    run = load_run(model_dir, trainer, list(folds), require_finished=False)

    found = first_checkpoint(model_dir, run.finished + [k for k in run.requested_folds if k not in run.finished])
    ckpt_rows, debug_rows, params_text, flops_text = [], [], "n/a (no checkpoint_final.pth)", "not computed"
    trainer_text, trainer_note = f"`{trainer}`", []
    if found is not None:
        fold, ckpt_path = found
        ckpt = load_checkpoint(ckpt_path)
        params = count_parameters_in_state_dict(ckpt["network_weights"])
        short = f"{fmt_count(params)}; " if params >= 1000 else ""
        params_text = f"{params:,} ({short}`fold_{fold}/checkpoint_final.pth`, BatchNorm running statistics " \
                      f"excluded)"
        ckpt_trainer = ckpt.get("trainer_name")
        if ckpt_trainer and ckpt_trainer != trainer:
            trainer_text = (f"`{ckpt_trainer}` (from `fold_{fold}/checkpoint_final.pth`: nnU-Net's predictor builds "
                            f"the network with this class); the folder is named for `{trainer}`")
            trainer_note = [
                f"**Trainer mismatch.** The folder is named for `{trainer}`, but its checkpoint was written by "
                f"`{ckpt_trainer}`. `nnUNetv2_predict -tr {trainer}` finds the folder by its name, then nnU-Net's "
                f"predictor (`nnUNetPredictor.initialize_from_trained_model_folder`) takes the trainer class from the "
                f"checkpoint's `trainer_name` and builds the network with `{ckpt_trainer}`; the parameter count and "
                f"FLOPs on this card are those of that network.", ""]
        ckpt_config = (ckpt.get("init_args") or {}).get("configuration")
        if ckpt_config and ckpt_config != configuration:
            ckpt_rows.append(["Configuration in checkpoint", f"`{ckpt_config}`: nnU-Net's predictor uses it, not the "
                                                            f"folder's `{configuration}`"])
        if "current_epoch" in ckpt:
            ckpt_rows.append(["Epochs trained (checkpoint)", str(ckpt["current_epoch"])])
        axes = ckpt.get("inference_allowed_mirroring_axes")
        ckpt_rows.append(["Test-time mirroring axes", str(tuple(axes)) if axes is not None else "none"])
        if with_flops:
            macs, shape = model_macs(model_dir, fold)
            flops_text = f"{fmt_count(macs)} MACs = {fmt_count(2 * macs)} FLOPs for input {_dims(shape)}"
        debug_file = model_dir / f"fold_{fold}" / "debug.json"
        if debug_file.is_file():
            try:
                debug = json.loads(debug_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                debug = {}
            debug_rows = [[k, str(debug[k])] for k in DEBUG_KEYS if k in debug]
    elif with_flops:
        flops_text = "n/a (no checkpoint_final.pth to rebuild the network from)"

    arch_kwargs = cm.network_arch_init_kwargs
    strides = arch_kwargs.get("strides", cm.pool_op_kernel_sizes if hasattr(cm, "pool_op_kernel_sizes") else None)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    lines = [f"# Model card: `{trainer}` on {dataset_name} ({configuration})", "",
             f"Written by nnunet-lmnet {_version('nnunet-lmnet')} on {now} from `{model_dir}`.", "",
             "## Model", ""]
    model_rows = [["Trainer", trainer_text], ["Plans", f"`{plans_name}`"], ["Configuration", f"`{configuration}`"],
                  ["Network class", f"`{cm.network_arch_class_name}`"], ["Parameters", params_text],
                  ["MACs / FLOPs", flops_text], ["Patch size", _dims(cm.patch_size)],
                  ["Batch size", str(cm.batch_size)], ["Target spacing", _dims(cm.spacing)],
                  ["Strides per stage", json.dumps(strides) if strides is not None else "n/a"],
                  ["Normalisation", ", ".join(cm.normalization_schemes)],
                  ["Image reader/writer", f"`{plans.get('image_reader_writer', 'n/a')}`"]] + ckpt_rows
    lines += [md_table(["Field", "Value"], model_rows, align_right_from=2), ""] + trainer_note
    if with_flops:
        lines += [f"{FLOPS_NOTE}", ""]
    lines += ["Architecture arguments (`arch_kwargs` of the plans):", "", "```json",
              _compact_json(arch_kwargs), "```", ""]

    lines += ["## Dataset", ""]
    ds_rows = [["Name", dataset_name], ["Labels", _labels_text(dataset_json)],
               ["Input channels", ", ".join(f"{k}: {v}" for k, v in
                                            (dataset_json.get("channel_names") or dataset_json.get("modality")
                                             or {}).items()) or "n/a"],
               ["Training cases", str(dataset_json.get("numTraining", "n/a"))],
               ["File ending", f"`{dataset_json.get('file_ending', 'n/a')}`"]]
    for key in ("description", "reference", "licence", "license", "release"):
        if dataset_json.get(key):
            ds_rows.append([key.capitalize(), str(dataset_json[key])])
    lines += [md_table(["Field", "Value"], ds_rows, align_right_from=2), ""]

    lines += ["## Cross-validation splits", ""] + _splits_section(dataset_name)
    lines += ["## Cross-validation results", ""] + _cv_section(run, names)

    lines += ["## Software", "",
              md_table(["Package", "Version (environment that wrote this card)"],
                       [["Python", platform.python_version()], ["nnunetv2", _version("nnunetv2")],
                        ["torch", _version("torch")], ["nnunet-lmnet", _version("nnunet-lmnet")]],
                       align_right_from=2), ""]
    if debug_rows:
        lines += [f"Training run (from `fold_{found[0]}/debug.json`):", "",
                  md_table(["Setting", "Value"], debug_rows, align_right_from=2), ""]
    lines += ["## Intended use and limitations", "",
              "Research comparison of segmentation networks under nnU-Net's pipeline. Not validated for clinical "
              "use. Results hold for the data distribution of the dataset above; describe any other intended use "
              "and known failure modes here.", ""]
    return "\n".join(lines)


def write_model_card(model_dir: Path, out: Path | None = None, overwrite: bool = False, with_flops: bool = False,
                     folds=DEFAULT_FOLDS) -> tuple[Path, str]:
    out = Path(out) if out is not None else Path(model_dir) / "MODEL_CARD.md"
    refuse_existing([out], overwrite)
    text = build_model_card(Path(model_dir), with_flops=with_flops, folds=folds)
    atomic_write_text(out, text)
    return out, text
