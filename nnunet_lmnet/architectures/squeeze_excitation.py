"""Squeeze-and-excitation as LM-Net uses it: reduction 4, ReLU inside, Hardsigmoid gate."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pointwise import pointwise_conv_nd


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, dim: int, reduction: int = 4):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"squeeze-excitation: {channels} channels cannot be reduced by {reduction}")
        self.reduce = pointwise_conv_nd(dim, channels, hidden)
        self.expand = pointwise_conv_nd(dim, hidden, channels)
        # The official code draws these weights from kaiming_normal; biases keep torch's default.
        nn.init.kaiming_normal_(self.reduce.weight)
        nn.init.kaiming_normal_(self.expand.weight)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel scale (N, C, 1, ...) that forward multiplies x by."""
        s = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        return F.hardsigmoid(self.expand(F.relu(self.reduce(s))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
