"""nnU-Net trainers for LM-Net and LGMSNet: the stock nnUNetTrainer with our network.

The plans a trainer receives are rewritten (``plans.derive.derive_plans``) before the stock ``__init__`` sees them,
so everything nnU-Net derives from the plans describes the network actually trained: the deep-supervision scales
(``pool_op_kernel_sizes`` = our truncated strides), the ``plans.json`` saved in the results folder (read back by
``--c``, ``--val``, ``nnUNetv2_predict`` and ``find_best_configuration``) and the stock predictor's network.
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lmnet.plans.derive import derive_plans
from nnunet_lmnet.training.network_builder import build_network


class _PluginTrainerBase(nnUNetTrainer):
    """Shared behaviour; `architecture` names the preset ('lmnet' / 'lgmsnet')."""

    architecture: str = ""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # nnUNetTrainer records its init args by inspecting this signature: keep the parameter names unchanged.
        plans = derive_plans(plans, self.architecture)
        super().__init__(plans, configuration, fold, dataset_json, device)


class nnUNetTrainerLMNet(_PluginTrainerBase):
    architecture = "lmnet"

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision: bool = True):
        return build_network("lmnet", configuration_manager, num_input_channels, num_output_channels,
                             enable_deep_supervision)


class nnUNetTrainerLGMSNet(_PluginTrainerBase):
    architecture = "lgmsnet"

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision: bool = True):
        return build_network("lgmsnet", configuration_manager, num_input_channels, num_output_channels,
                             enable_deep_supervision)
