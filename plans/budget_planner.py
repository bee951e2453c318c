"""Patch and batch size for our network under a GPU memory target, planned by nnU-Net's own planner.

nnU-Net's ``ExperimentPlanner`` judges a patch by a feature-map-size proxy of its default network (PlainConvUNet)
against a reference value scaled by the memory target; it shrinks the patch (its axis rule, its divisibility steps)
until batch 2 fits, then sizes the batch from the headroom, capped at 5 % of the dataset's voxels. ``BudgetPlanner``
keeps all of that and changes one thing: the estimate of a candidate patch is the default network's proxy times
(our network's saved activation bytes / the default network's, both measured at that patch, see
``memory_estimate``). "Fits the budget" therefore means what it means for nnU-Net: our network keeps no more
activation memory than the PlainConvUNet nnU-Net would plan for that GPU.

Each configuration of the source plans is planned again at its own spacing and median shape and keeps its
``data_identifier`` (the preprocessed data is reused); only patch, batch and the architecture (the strides of the
new patch, truncated to our depth) change. The default planner is used rather than a ResEnc one because its
reference values are calibrated for PlainConvUNet, the network the ratio is taken against.
"""
from __future__ import annotations

import copy
import math

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.utilities.json_export import recursive_fix_for_json_export
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from .derive import derive_architecture
from .memory_estimate import saved_bytes_per_sample_estimate

# Recorded in every re-planned configuration; the trainers read it (training.memory_check).
BUDGET_KEY = "memory_budget"


class BudgetTooSmall(ValueError):
    pass


class BudgetPlanner(ExperimentPlanner):
    def __init__(self, dataset_name_or_id, arch: str, gpu_memory_target_in_gb: float, plans_name: str):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb=gpu_memory_target_in_gb, plans_name=plans_name)
        self.arch = arch
        self._smallest_patch = None  # per configuration, see get_plans_for_configuration

    def memory_ratio(self, default_architecture: dict, patch_size, input_channels: int, num_classes: int) -> float:
        """Saved bytes of our network / nnU-Net's default network, same patch and plans geometry."""
        ours = derive_architecture(self.arch, default_architecture)
        return (saved_bytes_per_sample_estimate(ours, input_channels, num_classes, patch_size)
                / saved_bytes_per_sample_estimate(default_architecture, input_channels, num_classes, patch_size))

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                    _cache):
        # nnU-Net's shrinking loop has no lower bound (it would go on to empty patches): stop at 8 voxels per axis
        # (one pooling step), or the median size where that is smaller
        self._smallest_patch = [min(2 * self.UNet_featuremap_min_edge_length, round(m)) for m in median_shape]
        return super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                   approximate_n_voxels_dataset, _cache)

    # nnU-Net declares this static and calls it through self; an instance method is needed for self.arch
    def static_estimate_VRAM_usage(self, patch_size, input_channels, output_channels, arch_class_name, arch_kwargs,
                                   arch_kwargs_req_import):
        if self._smallest_patch is not None and any(p < s for p, s in zip(patch_size, self._smallest_patch)):
            raise BudgetTooSmall(f"not even a patch of {self._smallest_patch} fits {self.UNet_vram_target_GB:g} GB "
                                 "with batch 2")
        proxy = ExperimentPlanner.static_estimate_VRAM_usage(patch_size, input_channels, output_channels,
                                                             arch_class_name, arch_kwargs, arch_kwargs_req_import)
        default = {"network_class_name": arch_class_name, "arch_kwargs": arch_kwargs,
                   "_kw_requires_import": tuple(arch_kwargs_req_import)}
        return proxy * self.memory_ratio(default, patch_size, input_channels, output_channels)


def _dataset_voxels(plans: dict, name: str, num_training: int) -> float:
    """The `approximate_n_voxels_dataset` ExperimentPlanner.plan_experiment passes for configuration `name`.

    It counts the full-resolution 3D median (also for 2d) and scales it by the spacing for 3d_lowres."""
    pm = PlansManager(plans)
    reference = pm.get_configuration("3d_fullres" if "3d_fullres" in plans["configurations"] else "2d")
    cfg = pm.get_configuration(name)
    d = len(cfg.spacing)
    scale = np.prod(np.array(reference.spacing[-d:], dtype=np.float64) / np.array(cfg.spacing, dtype=np.float64))
    return float(np.prod(reference.median_image_size_in_voxels, dtype=np.float64) * scale * num_training)


def plan_for_budget(planner: BudgetPlanner, source_plans: dict) -> dict:
    """A copy of `source_plans` whose configurations have the planner's patch, batch and our architecture.

    Configurations that inherit patch and batch (3d_cascade_fullres) keep inheriting them from the re-planned
    parent. Raises BudgetTooSmall when not even the smallest patch fits."""
    plans = copy.deepcopy(source_plans)
    pm = PlansManager(source_plans)
    cache: dict = {}
    for name, own in plans["configurations"].items():
        if "patch_size" not in own and "batch_size" not in own:
            continue
        cm = pm.get_configuration(name)
        try:
            new = planner.get_plans_for_configuration(
                cm.spacing, cm.median_image_size_in_voxels, cm.data_identifier,
                _dataset_voxels(source_plans, name, planner.dataset_json["numTraining"]), cache)
        except BudgetTooSmall as e:
            raise BudgetTooSmall(f"{name}: {e}") from None
        own["patch_size"] = [int(p) for p in new["patch_size"]]
        own["batch_size"] = int(new["batch_size"])
        own["architecture"] = derive_architecture(planner.arch, new["architecture"])
        own[BUDGET_KEY] = {"arch": planner.arch, "gpu_memory_target_gb": float(planner.UNet_vram_target_GB)}
    plans["plans_name"] = planner.plans_identifier
    recursive_fix_for_json_export(plans)
    return plans


def budget_summary(plans: dict) -> list[str]:
    """One line per re-planned configuration: patch and batch."""
    return [f"  {name}: patch {cfg['patch_size']}, batch {cfg['batch_size']} "
            f"({math.prod(cfg['patch_size']) * cfg['batch_size']:,} voxels per step)"
            for name, cfg in plans["configurations"].items() if BUDGET_KEY in cfg]
