"""nnU-Net trainers for LM-Net and LGMSNet: the stock nnUNetTrainer with our network.

The plans a trainer receives are rewritten (``plans.derive.derive_plans``) before the stock ``__init__`` sees them,
so everything nnU-Net derives from the plans describes the network actually trained: the deep-supervision scales
(``pool_op_kernel_sizes`` = our truncated strides), the ``plans.json`` saved in the results folder (read back by
``--c``, ``--val``, ``nnUNetv2_predict`` and ``find_best_configuration``) and the stock predictor's network.
At the start of training they log one line when our network needs more activation memory than nnU-Net planned
for (``memory_check``).
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lmnet.plans.derive import derive_plans
from nnunet_lmnet.training.memory_check import memory_warning
from nnunet_lmnet.training.network_builder import build_network


class _PluginTrainerBase(nnUNetTrainer):
    """Shared behaviour; `architecture` names the preset ('lmnet' / 'lgmsnet')."""

    architecture: str = ""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # nnUNetTrainer records its init args by inspecting this signature: keep the parameter names unchanged.
        as_planned = plans
        plans = derive_plans(plans, self.architecture)
        super().__init__(plans, configuration, fold, dataset_json, device)
        # before our rewrite: the network nnU-Net sized patch and batch for (memory check)
        self.configuration_as_planned = PlansManager(as_planned).get_configuration(configuration).configuration

    def on_train_start(self):
        super().on_train_start()
        self.log_memory_check()

    def log_memory_check(self):
        """One log line if our network keeps more activations than nnU-Net's at the plans' patch and batch."""
        if self.local_rank != 0:
            return
        try:
            line = memory_warning(self.architecture, self.configuration_as_planned, self.num_input_channels,
                                  self.label_manager.num_segmentation_heads, self.plans_manager.dataset_name,
                                  self.plans_manager.plans_name)
        except Exception as e:  # an estimate must not stop a training
            line = f"Memory check against the plans skipped ({type(e).__name__}: {e})"
        if line:
            self.print_to_log_file(line)


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
