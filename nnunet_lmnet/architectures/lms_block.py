"""LMS block (local multiscale): channel groups through depthwise kernels 3/5/7/9, then a 1/4 bottleneck.

Input and output have the same width C. Steps: split C into one group per kernel -> depthwise conv per group
(with bias) -> concat + x -> GroupNorm (one group per kernel branch) -> GELU -> 1x1 C->C/4 -> norm -> SiLU ->
3x3 C/4->C -> norm -> SiLU -> + x. The paper says SiLU after the GroupNorm; the official code uses GELU (kept).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .depthwise import depthwise_conv_nd
from .in_place import add_in_place, no_autograd
from .lgms_layers import ConvNormAct, axis_kernel, full_axes

LMS_KERNELS = (3, 5, 7, 9)


class LMSBlock(nn.Module):
    def __init__(
        self,
        channels: int,
        dim: int,
        *,
        conv_axes: Sequence[bool] | None = None,
        norm: str = "batch",
        kernel_sizes: Sequence[int] = LMS_KERNELS,
        reduction: int = 4,
    ):
        super().__init__()
        branches = len(kernel_sizes)
        if channels % branches or channels % reduction:
            raise ValueError(
                f"LMS block width {channels} must be divisible by {branches} (kernel branches) and {reduction}"
            )
        axes = full_axes(dim, conv_axes)
        self.group = channels // branches
        self.depthwise = nn.ModuleList()
        for k in kernel_sizes:
            kernel = axis_kernel(k, axes)
            self.depthwise.append(depthwise_conv_nd(self.group, kernel, bias=True))
        # One GroupNorm group per kernel branch, so each scale is normalised on its own.
        self.group_norm = nn.GroupNorm(branches, channels)
        self.act = nn.GELU()
        self.reduce = ConvNormAct(dim, channels, channels // reduction, 1, norm=norm)
        self.expand = ConvNormAct(dim, channels // reduction, channels, 3, conv_axes=axes, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(x, self.group, dim=1)
        y = torch.cat([dw(g) for dw, g in zip(self.depthwise, groups)], dim=1)
        if no_autograd():  # inference: the adds and the GELU overwrite fresh maps (in_place.py), same values
            y = torch.ops.aten.gelu_(self.group_norm(add_in_place(y, x)))
            return add_in_place(self.expand(self.reduce(y)), x)
        y = self.act(self.group_norm(y + x))
        return self.expand(self.reduce(y)) + x
