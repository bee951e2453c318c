"""nnU-Net's benchmark trainers with our networks, and a variant that also runs without a GPU.

Run ``-tr nnUNetTrainerBenchmark_5epochs`` (stock network) and ``-tr nnUNetTrainerLMNetBenchmark_5epochs`` on the same
plans and GPU, then compare ``fastest_epoch`` in each ``fold_0/benchmark_result.json``. The ``_noDataLoading``
variants time pure compute on one dummy batch.

The classes combine our trainer with the stock one by multiple inheritance. With our trainer first, the MRO is
``ours -> _PluginTrainerBase -> stock benchmark -> nnUNetTrainer``: our ``__init__`` rewrites the plans before the
stock benchmark ``__init__`` runs, ``build_network_architecture`` is ours, and everything else (5 epochs, no
checkpoints or validation, the JSON) is the stock benchmark's. noDataLoading builds its dummy deep-supervision targets
from ``_get_deep_supervision_scales()``, which reads the rewritten plans, so they match our network's outputs.

The stock classes assert CUDA. ``...BenchmarkAnyDevice_5epochs`` lifts only that assert, so the same comparison runs
on CPU (``-device cpu``); the JSON key then names the device type (``cpu``) where the GPU name would be.
"""
from __future__ import annotations

from unittest import mock

import torch
from nnunetv2.training.nnUNetTrainer.variants.benchmarking.nnUNetTrainerBenchmark_5epochs import (
    nnUNetTrainerBenchmark_5epochs,
)
from nnunetv2.training.nnUNetTrainer.variants.benchmarking.nnUNetTrainerBenchmark_5epochs_noDataLoading import (
    nnUNetTrainerBenchmark_5epochs_noDataLoading,
)

from nnunet_lmnet.training.trainers import nnUNetTrainerLGMSNet, nnUNetTrainerLMNet

__all__ = [
    "nnUNetTrainerLMNetBenchmark_5epochs", "nnUNetTrainerLMNetBenchmark_5epochs_noDataLoading",
    "nnUNetTrainerLGMSNetBenchmark_5epochs", "nnUNetTrainerLGMSNetBenchmark_5epochs_noDataLoading",
    "nnUNetTrainerBenchmarkAnyDevice_5epochs",
    "nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs", "nnUNetTrainerLGMSNetBenchmarkAnyDevice_5epochs",
]


class nnUNetTrainerLMNetBenchmark_5epochs(nnUNetTrainerLMNet, nnUNetTrainerBenchmark_5epochs):
    pass


class nnUNetTrainerLMNetBenchmark_5epochs_noDataLoading(nnUNetTrainerLMNet,
                                                        nnUNetTrainerBenchmark_5epochs_noDataLoading):
    pass


class nnUNetTrainerLGMSNetBenchmark_5epochs(nnUNetTrainerLGMSNet, nnUNetTrainerBenchmark_5epochs):
    pass


class nnUNetTrainerLGMSNetBenchmark_5epochs_noDataLoading(nnUNetTrainerLGMSNet,
                                                          nnUNetTrainerBenchmark_5epochs_noDataLoading):
    pass


class nnUNetTrainerBenchmarkAnyDevice_5epochs(nnUNetTrainerBenchmark_5epochs):
    """``nnUNetTrainerBenchmark_5epochs`` on any device (the stock network; the CPU baseline for our variants)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # The stock __init__ ends in `assert torch.cuda.is_available()`, which cannot be lifted from outside: skip that
        # one __init__ (call the next one in the MRO after it) and set the same attributes it sets.
        super(nnUNetTrainerBenchmark_5epochs, self).__init__(plans, configuration, fold, dataset_json, device)
        assert self.fold == 0, "benchmark with fold 0 only, so the results can be parsed"
        self.disable_checkpointing = True
        self.num_epochs = 5
        self.crashed_with_runtime_error = False

    def on_train_end(self):
        if self.device.type == "cuda":
            return super().on_train_end()
        # The stock on_train_end writes the JSON with torch.cuda.get_device_name(); without a GPU name the device type
        # takes its place (in the key and in 'gpu_name'), the rest of the record is unchanged.
        with mock.patch.object(torch.cuda, "get_device_name", lambda *args, **kwargs: self.device.type):
            return super().on_train_end()


class nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs(nnUNetTrainerLMNet, nnUNetTrainerBenchmarkAnyDevice_5epochs):
    pass


class nnUNetTrainerLGMSNetBenchmarkAnyDevice_5epochs(nnUNetTrainerLGMSNet, nnUNetTrainerBenchmarkAnyDevice_5epochs):
    pass
