"""LM-Net and LGMSNet for nnU-Net v2.

Kept import-free on purpose: a .pth file imports ``nnunet_lmnet._autodiscovery`` at every interpreter start.
"""
__version__ = "0.1.0"
