"""Converters from the datasets as users download them to the nnU-Net v2 raw format."""
