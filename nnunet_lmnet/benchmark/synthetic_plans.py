"""nnU-Net-shaped default plans configurations (PlainConvUNet) without a dataset, for `benchmark --synthetic`.

The geometry comes from nnU-Net's own topology rule (``get_pool_and_conv_props``: pool until the bottleneck is about
4 voxels per axis) and the batch size from its GPU-memory rule (feature-map size estimate against the reference value
of an 8 GB target). The planner also caps the batch at 5 % of a dataset's voxels; with no dataset that cap is not
applied.
"""
from __future__ import annotations

# Patch of the built-in configurations: a common 2D plan and the usual 3d_fullres plan at isotropic spacing.
SYNTHETIC_PATCH = {"2d": (256, 256), "3d": (128, 128, 128)}
SYNTHETIC_CONFIGURATION_NAME = {"2d": "2d", "3d": "3d_fullres"}

# nnU-Net's ExperimentPlanner (2.x): feature-map size a reference batch fits in 8 GB, and that batch size.
_REFERENCE = {2: (85_000_000, 12), 3: (560_000_000, 2)}
_MAX_FEATURES = {2: 512, 3: 320}
_MIN_BATCH_SIZE = 2


def default_configuration(strides, kernel_sizes, patch_size, batch_size=2, max_features=None) -> dict:
    """A configuration as nnU-Net's default planner writes it (PlainConvUNet), for the given geometry.

    `max_features` caps the stage widths (None: nnU-Net's caps, 512 in 2D and 320 in 3D)."""
    dim = len(patch_size)
    n = len(strides)
    cap = _MAX_FEATURES[dim] if max_features is None else max_features
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
                "features_per_stage": [min(32 * 2 ** i, cap) for i in range(n)],
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


def nnunet_topology(patch_size) -> tuple[list, list, list]:
    """(strides, kernel sizes, patch) nnU-Net plans for `patch_size` at isotropic spacing (patch may grow to fit)."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernels, patch, _ = get_pool_and_conv_props([1.0] * len(patch_size), list(patch_size), 4, 999999)
    as_ints = lambda rows: [[int(v) for v in r] for r in rows]  # noqa: E731 (numpy ints are not JSON)
    return as_ints(strides), as_ints(kernels), [int(p) for p in patch]


def nnunet_batch_size(configuration: dict, in_channels: int, num_classes: int) -> int:
    """The batch size nnU-Net's planner gives this configuration's default network (without the dataset cap)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = configuration["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 in_channels, num_classes, allow_init=False)
    estimate = net.compute_conv_feature_map_size(configuration["patch_size"])
    reference, reference_batch = _REFERENCE[len(configuration["patch_size"])]
    return max(round(reference / estimate * reference_batch), _MIN_BATCH_SIZE)


def synthetic_configuration(kind: str, patch_size=None, batch_size=None, in_channels=1, num_classes=2) -> dict:
    """The built-in '2d' / '3d' configuration; `patch_size` / `batch_size` override the defaults.

    Raises ValueError when nnU-Net's topology needs a different patch than the one asked for."""
    patch = list(patch_size or SYNTHETIC_PATCH[kind])
    if len(patch) != len(SYNTHETIC_PATCH[kind]):
        raise ValueError(f"a {kind} patch has {len(SYNTHETIC_PATCH[kind])} sizes, got {patch}")
    strides, kernels, planned = nnunet_topology(patch)
    if planned != patch:
        raise ValueError(f"nnU-Net's topology for patch {patch} needs patch {planned} (divisible by its strides)")
    cfg = default_configuration(strides, kernels, patch)
    cfg["data_identifier"] = f"nnUNetPlans_{SYNTHETIC_CONFIGURATION_NAME[kind]}"
    cfg["batch_size"] = int(batch_size) if batch_size else nnunet_batch_size(cfg, in_channels, num_classes)
    return cfg
