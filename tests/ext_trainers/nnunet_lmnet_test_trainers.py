"""Trainers for the end-to-end tests, found by nnU-Net through this folder in nnUNet_extTrainer.

Listing this folder next to the plugin's also checks that a user's own ext folder keeps working beside ours.
One epoch of 2 iterations (the benchmark ones: two epochs, so `fastest_epoch` is a minimum; the `--c` and cascade
ones at the end: see their docstrings); one torch thread (the CLI's ``-device cpu`` sets one thread per core, which
collapses when another process holds a core); seeded for repeatable runs.
"""
import os
import random
import signal

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lmnet.training.benchmark_trainers import (
    nnUNetTrainerBenchmarkAnyDevice_5epochs,
    nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs,
)
from nnunet_lmnet.training.recipe_trainers import nnUNetTrainerLMNet_AdamWCosine
from nnunet_lmnet.training.trainers import nnUNetTrainerLGMSNet, nnUNetTrainerLMNet

# nnUNetTrainerLMNet_AdamWCosine_resume_test kills itself (SIGKILL) once this many epochs are done and checkpointed.
KILL_AFTER_EPOCHS = "NNUNET_LMNET_TEST_KILL_AFTER_EPOCHS"
# "1": the trainers below skip the validation after training (its worker processes take ~10-20 s to start) where a
# later command validates or predicts anyway
SKIP_FINAL_VALIDATION = "NNUNET_LMNET_TEST_SKIP_FINAL_VALIDATION"


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
    """The stock trainer, shortened: nnU-Net's default network (or whatever network the plans name)."""

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


class _SkippableValidation:
    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get(SKIP_FINAL_VALIDATION) == "1":
            self.print_to_log_file(f"validation skipped ({SKIP_FINAL_VALIDATION}=1)")
            return
        super().perform_actual_validation(save_probabilities)


class nnUNetTrainerLMNet_AdamWCosine_resume_test(_SkippableValidation, nnUNetTrainerLMNet_AdamWCosine):
    """For `--c`: 3 epochs x 1 iteration, checkpoint_latest after every epoch, LM-Net's own cosine schedule.

    With KILL_AFTER_EPOCHS=N in the environment the process SIGKILLs itself right after epoch N-1 wrote its
    checkpoint: a training killed hard, at a point that does not depend on timing.
    """

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _shorten(self)
        self.num_epochs = 3
        self.num_iterations_per_epoch = 1
        self.save_every = 1

    def on_epoch_end(self):
        super().on_epoch_end()  # writes checkpoint_latest.pth, then counts the epoch
        if os.environ.get(KILL_AFTER_EPOCHS) == str(self.current_epoch):
            os.kill(os.getpid(), signal.SIGKILL)


class nnUNetTrainerLMNet_NoMirroring_test(_SkippableValidation, nnUNetTrainerLMNet_test):
    """The test trainer with 1 iteration and without mirroring (as nnU-Net's nnUNetTrainerNoMirroring): validation
    and prediction run one pass per tile instead of eight in 3D, which keeps the cascade test short."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = 1

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, patch, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, patch, None
