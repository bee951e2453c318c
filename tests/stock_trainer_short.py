"""``nnUNetv2_train`` with nnU-Net's own ``nnUNetTrainer``, cut to 1 epoch of 2 iterations (run as a script).

The plans-route test needs the stock trainer itself, found without any ``nnUNet_extTrainer`` folder; nnU-Net's
shortest stock variant (``nnUNetTrainer_1epoch``) still runs 250 iterations. This runs the console command's own
entry point after shortening the class in this process only, so the trainer name in the checkpoint is
``nnUNetTrainer`` and every other step is nnU-Net's. Arguments: those of ``nnUNetv2_train``.
"""
import os
import sys

import torch

if __name__ == "__main__":
    # the .pth of a regular install would add our trainer folder at start-up unless opted out: prove it did not
    assert "nnUNet_extTrainer" not in os.environ, os.environ["nnUNet_extTrainer"]
    from nnunetv2.run.run_training import run_training_entry
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    stock_init = nnUNetTrainer.__init__

    # the same parameter names as nnUNetTrainer.__init__ (it records its init arguments by name)
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        stock_init(self, plans, configuration, fold, dataset_json, device)
        torch.set_num_threads(1)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1

    nnUNetTrainer.__init__ = __init__
    sys.argv[0] = "nnUNetv2_train"
    run_training_entry()
