"""The official code's optimiser and learning-rate schedule, inside nnU-Net's training.

``nnUNetTrainerLMNet`` / ``nnUNetTrainerLGMSNet`` train with nnU-Net's recipe (SGD 1e-2, Nesterov momentum 0.99,
poly 0.9). These variants swap in only the optimiser and schedule of the networks' own code; nnU-Net keeps
everything else: its Dice+CE loss with deep supervision, its augmentation and patch sampling, 1000 epochs of 250
iterations (the schedules follow ``num_epochs``) and its sliding-window validation. Like every nnU-Net scheduler
they step once per epoch, in ``on_train_epoch_start`` with the explicit epoch, so a resumed run (``--c``) continues
on the same curve.
"""
from __future__ import annotations

import math

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from torch.optim.lr_scheduler import _LRScheduler

from nnunet_lmnet.training.trainers import nnUNetTrainerLGMSNet, nnUNetTrainerLMNet

__all__ = ["nnUNetTrainerLMNet_AdamWCosine", "nnUNetTrainerLGMSNet_SGD002",
           "nnUNetTrainerLGMSNet_AdamWWarmupCosine"]


class WarmupCosineLRScheduler(_LRScheduler):
    """Linear warm-up, then cosine annealing to 0, called like nnU-Net's ``PolyLRScheduler``: ``step(epoch)``.

    The lr is a closed form of the step, so ``step(e)`` gives the same lr whatever came before (resuming).
    Warm-up as in MONAI's ``LinearWarmupCosineAnnealingLR`` (used by the LGMSNet 3D code, start and end lr 0): step
    ``e < warmup_steps`` gets ``initial_lr * e / (warmup_steps - 1)``, then
    ``initial_lr * (1 + cos(pi * (e - warmup_steps) / (max_steps - warmup_steps))) / 2``. With ``warmup_steps=0``
    this is ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=max_steps)``. A warm-up of one step is none (the
    formula needs two).
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int = 0):
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps if warmup_steps >= 2 else 0
        if self.warmup_steps >= max_steps:
            raise ValueError(f"warm-up ({warmup_steps} steps) must be shorter than the run ({max_steps} steps)")
        self.ctr = 0
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.initial_lr * step / (self.warmup_steps - 1)
        progress = (step - self.warmup_steps) / (self.max_steps - self.warmup_steps)
        return 0.5 * self.initial_lr * (1 + math.cos(math.pi * progress))

    def step(self, current_step=None):
        if current_step is None or current_step == -1:  # the base class's initial call, or plain stepping
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class nnUNetTrainerLMNet_AdamWCosine(nnUNetTrainerLMNet):
    """LM-Net's own recipe: AdamW, lr 1e-3, weight decay 1e-4, cosine annealing to 0 over the run.

    From the official LM-Net training code (200 epochs there, cosine per epoch; here over ``num_epochs``).
    Not taken over: its CE+Dice with class weights [1, 4] and label smoothing, its resize/crop augmentation.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-3
        self.weight_decay = 1e-4

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, WarmupCosineLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class nnUNetTrainerLGMSNet_SGD002(nnUNetTrainerLGMSNet):
    """LGMSNet's 2D recipe: SGD, lr 0.02, momentum 0.9 (not Nesterov), weight decay 1e-4, poly 0.9.

    From the official code (``main.py`` with ``train.sh``'s ``--base_lr 0.02``; ISIC 2018, BUSI, TNSCUI: 500 epochs,
    batch 16). There the poly decay is updated every iteration; nnU-Net's ``PolyLRScheduler`` updates it per epoch.
    Kvasir used ``main_kvasir.py`` with lr 0.01 instead. Not taken over: its BCE+Dice loss, 256x256 resize,
    RandomRotate90 + flip augmentation.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 2e-2
        self.weight_decay = 1e-4

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.network.parameters(), lr=self.initial_lr, momentum=0.9,
                                    weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, exponent=0.9)


class nnUNetTrainerLGMSNet_AdamWWarmupCosine(nnUNetTrainerLGMSNet):
    """LGMSNet's 3D recipe: AdamW, lr 1e-3, weight decay 1e-5, linear warm-up from 0 then cosine to 0.

    From the official code (``main3d.py`` with ``train.sh``'s ``--optim_lr 1e-3 --lrschedule warmup_cosine``; the
    weight decay is ``--reg_weight``'s default 1e-5; BTCV, 5000 epochs, batch 1). Its 50 warm-up epochs are 1% of
    that run, so the warm-up here is ``warmup_fraction`` of ``num_epochs``: 10 of nnU-Net's 1000 (see
    ``WarmupCosineLRScheduler`` for the curve; like the original, epoch 0 runs at lr 0). Not taken over: its DiceCE
    loss, 96^3 ROI at 1.5x1.5x2.0 mm, flip/rotate90/intensity augmentation.
    """

    warmup_fraction = 0.01

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-3
        self.weight_decay = 1e-5

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        warmup = round(self.warmup_fraction * self.num_epochs)
        return optimizer, WarmupCosineLRScheduler(optimizer, self.initial_lr, self.num_epochs, warmup_steps=warmup)
