"""Segmentation heads and the deep-supervision output rule shared by both networks.

nnU-Net's contract: with deep supervision on, a list of logits, highest resolution first, one per decoder level
(n_stages - 1 of them); with it off, the full-resolution logits alone. The heads always exist, so the state_dict
is the same either way (the predictor builds with DS off and loads a checkpoint trained with DS on). They are
named ``decoder.seg_layers.*`` because nnU-Net's ``-pretrained_weights`` skips keys containing ``.seg_layers.``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .pointwise import pointwise_conv_nd


def make_seg_layers(dim: int, widths: Sequence[int], num_classes: int) -> nn.ModuleList:
    """One 1x1 conv (with bias) per decoder level, `widths` ordered highest resolution first."""
    return nn.ModuleList(pointwise_conv_nd(dim, w, num_classes) for w in widths)


def select_outputs(
    features: Sequence[torch.Tensor], seg_layers: nn.ModuleList, deep_supervision: bool
) -> torch.Tensor | list[torch.Tensor]:
    """Apply the heads to the decoder features (highest resolution first)."""
    if len(features) != len(seg_layers):
        raise RuntimeError(f"{len(features)} decoder levels but {len(seg_layers)} heads")
    if not deep_supervision:
        return seg_layers[0](features[0])
    return [head(f) for head, f in zip(seg_layers, features)]
