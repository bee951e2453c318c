"""A model folder for nnU-Net's default network without training it: plans, dataset.json and a checkpoint with the
network's initial weights, holding exactly what nnUNetPredictor reads. For tests that only need a default-network
model to predict with (timings, export), where a real training would cost most of the test's time."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch


def default_network_model_folder(preprocessed: Path, results: Path, configuration: str, fold: int = 0,
                                 trainer: str = "nnUNetTrainer", seed: int = 0) -> Path:
    """$nnUNet_results/<Dataset>/<trainer>__nnUNetPlans__<configuration> from the preprocessed dataset folder."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    torch.manual_seed(seed)
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import,
                                 determine_num_input_channels(pm, cm, dataset_json),
                                 pm.get_label_manager(dataset_json).num_segmentation_heads, deep_supervision=False)
    folder = results / preprocessed.name / f"{trainer}__nnUNetPlans__{configuration}"
    (folder / f"fold_{fold}").mkdir(parents=True)
    shutil.copy(preprocessed / "nnUNetPlans.json", folder / "plans.json")
    shutil.copy(preprocessed / "dataset.json", folder / "dataset.json")
    axes = tuple(range(len(cm.patch_size)))
    torch.save({"network_weights": net.state_dict(), "trainer_name": trainer,
                "init_args": {"configuration": configuration, "fold": fold}, "inference_allowed_mirroring_axes": axes},
               folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder
