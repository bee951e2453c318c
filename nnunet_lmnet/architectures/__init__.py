"""Pure PyTorch networks (no nnunetv2 import): LM-Net and LGMSNet, 2D and 3D from one code path."""
