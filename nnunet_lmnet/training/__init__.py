"""nnU-Net trainers for LM-Net and LGMSNet (see ext/ for the folder nnU-Net scans)."""
