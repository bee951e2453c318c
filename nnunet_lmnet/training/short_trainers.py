"""Shorter schedules, in the style of nnU-Net's ``nnUNetTrainer_<N>epochs`` variants.

``nnUNetTrainerLMNet_Demo`` / ``nnUNetTrainerLGMSNet_Demo`` are what ``nnunet-lmnet demo`` trains on CPU:
a few short epochs, enough for the synthetic dataset, not for real data.
"""
from __future__ import annotations

import torch

from nnunet_lmnet.training.trainers import nnUNetTrainerLGMSNet, nnUNetTrainerLMNet

__all__ = []


def _short(base: type, name: str, epochs: int, iterations: int | None = None, val_iterations: int | None = None):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        if iterations is not None:
            self.num_iterations_per_epoch = iterations
        if val_iterations is not None:
            self.num_val_iterations_per_epoch = val_iterations

    cls = type(name, (base,), {"__init__": __init__, "__module__": __name__,
                               "__doc__": f"{base.__name__} for {epochs} epochs."})
    globals()[name] = cls
    __all__.append(name)
    return cls


for _base in (nnUNetTrainerLMNet, nnUNetTrainerLGMSNet):
    for _epochs in (1, 5, 10, 20, 50, 100, 250, 500):
        _short(_base, f"{_base.__name__}_{_epochs}epochs" if _epochs > 1 else f"{_base.__name__}_1epoch", _epochs)
    _short(_base, f"{_base.__name__}_Demo", epochs=5, iterations=20, val_iterations=4)
