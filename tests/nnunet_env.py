"""Environment for running the real nnUNetv2_* commands in tests."""
import os
from pathlib import Path

from nnunet_lmnet._autodiscovery import trainer_folder
from nnunet_lmnet.nnunet_commands import nnunet_environment

TEST_TRAINERS = Path(__file__).parent / "ext_trainers"
# Test trainers in TEST_TRAINERS: one epoch of 2 iterations, one thread, seeded.
E2E_TRAINERS = {"lmnet": "nnUNetTrainerLMNet_test", "lgmsnet": "nnUNetTrainerLGMSNet_test",
                "default": "nnUNetTrainer_test"}


def nnunet_test_env(root: Path) -> dict[str, str]:
    """nnU-Net folders under `root`, one process, no compile, our trainers plus the tests' own ext folder."""
    return nnunet_environment(
        root,
        nnUNet_def_n_proc="1",
        nnUNet_compile="0",
        nnUNet_extTrainer=os.pathsep.join([str(TEST_TRAINERS), trainer_folder()]),
    )
