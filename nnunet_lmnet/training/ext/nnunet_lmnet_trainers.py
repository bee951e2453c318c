"""The only module in the folder nnU-Net scans (``nnunet-lmnet trainer-path``).

nnU-Net imports every module of an ``nnUNet_extTrainer`` folder as a *top-level* name and purges it afterwards,
so this file has a globally unique name and only re-exports the real classes from the installed package.
"""
from nnunet_lmnet.training.registry import *  # noqa: F401,F403
