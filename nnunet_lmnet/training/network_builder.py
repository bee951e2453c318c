"""Build one of our networks from an nnU-Net configuration (trainer route and predictor)."""
from __future__ import annotations

import pydoc

import torch.nn as nn

from nnunet_lmnet.plans.derive import derive_architecture


def build_network(arch: str, configuration_manager, num_input_channels: int, num_output_channels: int,
                  enable_deep_supervision: bool) -> nn.Module:
    """`configuration_manager` may describe nnU-Net's default network (then `arch` is derived from it) or already
    our network (plans saved by our trainers or written by ``nnunet-lmnet derive-plans``)."""
    architecture = derive_architecture(arch, configuration_manager.configuration["architecture"])
    cls = pydoc.locate(architecture["network_class_name"])
    if cls is None:
        raise ImportError(f"cannot import {architecture['network_class_name']}: is nnunet-lmnet installed in this "
                          "environment?")
    return cls(input_channels=num_input_channels, num_classes=num_output_channels,
               deep_supervision=enable_deep_supervision, **architecture["arch_kwargs"])
