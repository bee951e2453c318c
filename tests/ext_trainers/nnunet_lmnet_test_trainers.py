"""Trainers for the end-to-end tests, found by nnU-Net through this folder in nnUNet_extTrainer.

Listing this folder next to the plugin's also checks that a user's own ext folder keeps working beside ours.
One epoch of 2 iterations (the benchmark ones: two epochs, so `fastest_epoch` is a minimum); one torch thread (the
CLI's ``-device cpu`` sets one thread per core, which collapses when another process holds a core); seeded for
repeatable runs.
"""
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lmnet.training.benchmark_trainers import (
    nnUNetTrainerBenchmarkAnyDevice_5epochs,
    nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs,
)
from nnunet_lmnet.training.trainers import nnUNetTrainerLGMSNet, nnUNetTrainerLMNet


def _shorten(trainer):
    torch.set_num_threads(1)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    trainer.num_epochs = 1
    trainer.num_iterations_per_epoch = 2
    trainer.num_val_iterations_per_epoch = 1


class nnUNetTrainerLMNet_test(nnUNetTrainerLMNet):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)


class nnUNetTrainerLGMSNet_test(nnUNetTrainerLGMSNet):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)


class nnUNetTrainer_test(nnUNetTrainer):
    """The stock trainer, shortened: trains whatever network the plans name (plans route)."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)


class nnUNetTrainerBenchmarkAnyDevice_5epochs_test(nnUNetTrainerBenchmarkAnyDevice_5epochs):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)
        self.num_epochs = 2


class nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs_test(nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)
        self.num_epochs = 2
