"""nnU-Net-shaped plans configurations for tests, without running the planner."""
from __future__ import annotations

import numpy as np


def default_configuration(strides, kernel_sizes, patch_size, batch_size=2) -> dict:
    """A configuration as nnU-Net's default planner writes it (PlainConvUNet), for the given geometry."""
    dim = len(patch_size)
    n = len(strides)
    conv = f"torch.nn.modules.conv.Conv{dim}d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dim}d"
    return {
        "data_identifier": f"nnUNetPlans_{dim}d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch_size,
        "patch_size": list(patch_size),
        "spacing": [1.0] * dim,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": n,
                "features_per_stage": [min(32 * 2 ** i, 320) for i in range(n)],
                "conv_op": conv,
                "kernel_sizes": [list(k) for k in kernel_sizes],
                "strides": [list(s) for s in strides],
                "n_conv_per_stage": [2] * n,
                "n_conv_per_stage_decoder": [2] * (n - 1),
                "conv_bias": True,
                "norm_op": norm,
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": True,
    }


def plans_with(configurations: dict) -> dict:
    return {
        "dataset_name": "Dataset999_Synthetic",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": configurations,
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }


def ds_scales(strides) -> list[np.ndarray]:
    """nnU-Net's deep-supervision scales (nnUNetTrainer._get_deep_supervision_scales)."""
    return list(1 / np.cumprod(np.vstack(strides), axis=0))[:-1]


# Geometries as nnU-Net plans them: (name, strides, kernels, patch sizes to try).
ISO_2D_7 = ([[1, 1]] + [[2, 2]] * 6, [[3, 3]] * 7)
ISO_2D_4 = ([[1, 1]] + [[2, 2]] * 3, [[3, 3]] * 4)
ANISO_3D_6 = ([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
              [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]])
ISO_3D_4 = ([[1, 1, 1]] + [[2, 2, 2]] * 3, [[3, 3, 3]] * 4)

GRID = [
    # id, (strides, kernels), patch, input channels, outputs
    ("2d-7stages-64x64", ISO_2D_7, (64, 64), 1, 2),
    ("2d-7stages-128x64", ISO_2D_7, (128, 64), 3, 4),
    ("2d-7stages-64x192", ISO_2D_7, (64, 192), 1, 4),
    ("2d-4stages-40x24", ISO_2D_4, (40, 24), 3, 2),
    ("3d-aniso-16x32x32", ANISO_3D_6, (16, 32, 32), 1, 2),
    ("3d-aniso-8x48x32", ANISO_3D_6, (8, 48, 32), 3, 4),
    ("3d-iso-16x16x24", ISO_3D_4, (16, 16, 24), 1, 4),
]
