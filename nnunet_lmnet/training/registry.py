"""Every trainer nnU-Net can find by name (re-exported by ext/nnunet_lmnet_trainers.py)."""
from nnunet_lmnet.training.benchmark_trainers import *  # noqa: F401,F403
from nnunet_lmnet.training.recipe_trainers import *  # noqa: F401,F403
from nnunet_lmnet.training.short_trainers import *  # noqa: F401,F403
from nnunet_lmnet.training.trainers import nnUNetTrainerLGMSNet, nnUNetTrainerLMNet  # noqa: F401
