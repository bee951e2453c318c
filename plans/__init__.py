"""Architecture presets (paper configurations) and derivation of network kwargs from nnU-Net plans."""
