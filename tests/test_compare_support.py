"""Builders of fabricated nnU-Net results folders, shared by test_compare*, test_boundary* and test_model_card*.

No tests here: pytest collects the module and finds none.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATASET = "Dataset042_Toy"
LABELS = {"background": 0, "liver": 1, "tumor": 2}


def dataset_json(file_ending: str = ".nii.gz", labels: dict | None = None) -> dict:
    return {"channel_names": {"0": "CT"}, "labels": labels or dict(LABELS), "numTraining": 10,
            "file_ending": file_ending}


def setup_env(monkeypatch, tmp_path: Path) -> dict[str, Path]:
    roots = {}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        p = tmp_path / var
        p.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(p))
        roots[var] = p
    (roots["nnUNet_results"] / DATASET).mkdir(exist_ok=True)
    return roots


def write_summary(path: Path, cases: dict[str, dict[int, float]], file_ending: str = ".nii.gz",
                  pred_folder: str = "/elsewhere/validation", ref_folder: str = "/elsewhere/gt",
                  counts: dict[str, dict[int, tuple[int, int, int, int]]] | None = None) -> dict:
    """summary.json in nnU-Net's layout for per-case Dice values {case: {label: dice or nan}}.

    Without ``counts`` every case gets TP=5, FP=1, FN=1, TN=100 (not consistent with the Dice given). With
    ``counts`` = {case: {label: (TP, FP, FN, TN)}}, Dice and IoU are derived from the counts as nnU-Net does and
    ``cases`` may be empty.
    """
    if counts is not None:
        cases = {}
        for case, d in counts.items():
            cases[case] = {lab: (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"))
                           for lab, (tp, fp, fn, tn) in d.items()}
    labels = sorted({lab for d in cases.values() for lab in d})
    per_case = []
    for case, d in cases.items():
        metrics = {}
        for lab in labels:
            dice = d[lab]
            iou = dice / (2 - dice) if np.isfinite(dice) else float("nan")
            tp, fp, fn, tn = counts[case][lab] if counts is not None else (5, 1, 1, 100)
            metrics[str(lab)] = {"Dice": dice, "IoU": iou, "FP": fp, "TP": tp, "FN": fn, "TN": tn,
                                 "n_pred": tp + fp, "n_ref": tp + fn}
        per_case.append({"prediction_file": f"{pred_folder}/{case}{file_ending}",
                         "reference_file": f"{ref_folder}/{case}{file_ending}", "metrics": metrics})
    mean = {str(lab): {m: float(np.nanmean([pc["metrics"][str(lab)][m] for pc in per_case]))
                       for m in ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")} for lab in labels}
    fg = {m: float(np.mean([mean[str(lab)][m] for lab in labels])) for m in ("Dice", "IoU", "FP", "TP", "FN", "TN",
                                                                            "n_pred", "n_ref")}
    summary = {"foreground_mean": fg, "mean": mean, "metric_per_case": per_case}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))  # NaN is written as NaN, as nnU-Net's save_json does
    return summary


def write_bn_checkpoint(path: Path, out_channels: int, trainer: str = "nnUNetTrainer") -> int:
    """A checkpoint whose network_weights hold a conv + BatchNorm; returns the expected parameter count."""
    import torch

    sd = {"conv.weight": torch.zeros(out_channels, 1, 3, 3), "conv.bias": torch.zeros(out_channels),
          "bn.weight": torch.ones(out_channels), "bn.bias": torch.zeros(out_channels),
          "bn.running_mean": torch.zeros(out_channels), "bn.running_var": torch.ones(out_channels),
          "bn.num_batches_tracked": torch.tensor(7)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": sd, "trainer_name": trainer, "init_args": {"configuration": "2d", "fold": 0},
                "inference_allowed_mirroring_axes": (0, 1)}, path)
    return out_channels * 9 + out_channels * 3


def tiny_plans(patch_size=(32, 32), configuration: str = "2d", norm: str = "BatchNorm2d") -> dict:
    """Plans with a 2-stage 2D PlainConvUNet that nnU-Net's predictor can build."""
    dim = len(patch_size)
    conv = f"torch.nn.modules.conv.Conv{dim}d"
    norm_mod = "batchnorm" if norm.startswith("BatchNorm") else "instancenorm"
    return {
        "dataset_name": DATASET, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0] * dim, "original_median_shape_after_transp": list(patch_size),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(range(dim)),
        "transpose_backward": list(range(dim)), "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0, "median": 0.0, "min": -1.0,
                                                              "max": 1.0, "percentile_99_5": 1.0,
                                                              "percentile_00_5": -1.0}},
        "configurations": {configuration: {
            "data_identifier": f"nnUNetPlans_{configuration}", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 4, "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size),
            "spacing": [1.0] * dim, "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {"n_stages": 2, "features_per_stage": [4, 8], "conv_op": conv,
                                "kernel_sizes": [[3] * dim, [3] * dim], "strides": [[1] * dim, [2] * dim],
                                "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
                                "norm_op": f"torch.nn.modules.{norm_mod}.{norm}",
                                "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                                "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
    }


def write_real_model(model_dir: Path, folds=(0,), trainer: str = "nnUNetTrainer", patch_size=(32, 32)):
    """plans.json, dataset.json and checkpoint_final.pth of a buildable tiny network; returns the network."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    model_dir.mkdir(parents=True, exist_ok=True)
    plans = tiny_plans(patch_size)
    dj = dataset_json()
    (model_dir / "plans.json").write_text(json.dumps(plans, indent=1))
    (model_dir / "dataset.json").write_text(json.dumps(dj, indent=1))
    pm = PlansManager(plans)
    cm = pm.get_configuration("2d")
    torch.manual_seed(0)
    net = nnUNetTrainer.build_network_architecture(pm, cm, 1, 3, enable_deep_supervision=False) \
        if "plans_manager" in nnUNetTrainer.build_network_architecture.__code__.co_varnames else \
        nnUNetTrainer.build_network_architecture(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                                 cm.network_arch_init_kwargs_req_import, 1, 3,
                                                 enable_deep_supervision=False)
    for k in folds:
        p = model_dir / f"fold_{k}" / "checkpoint_final.pth"
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"network_weights": net.state_dict(), "trainer_name": trainer,
                    "init_args": {"plans": plans, "configuration": "2d", "fold": k, "dataset_json": dj},
                    "inference_allowed_mirroring_axes": (0, 1)}, p)
    return net
