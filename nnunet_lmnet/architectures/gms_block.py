"""GMS block (global multiscale): a sparse transformer and a depthwise-conv branch side by side.

conv1 3x3 (C_in->C_out, any width change happens here) -> conv2 1x1 -> split: first t channels to the sparse
transformer, last c to x + DW(x) -> concat -> conv3 1x1 -> concat with the block input -> conv4 3x3 -> C_out.
conv1..conv4 are conv -> norm -> SiLU without bias. There is no residual around the whole block (as upstream).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .depthwise import depthwise_conv_nd
from .gms_transformer import SparseTransformer
from .in_place import add_in_place, no_autograd
from .lgms_layers import ConvNormAct, axis_kernel, full_axes
from .ops import batch_norm_nd, conv_nd


class DepthwiseBranch(nn.Module):
    """x + (depthwise kxk -> BN -> ReLU -> depthwise 1x1 -> BN).

    BatchNorm in 2D *and* 3D, as upstream (the rest of the 3D network uses InstanceNorm).
    """

    def __init__(self, channels: int, dim: int, *, conv_axes: Sequence[bool] | None = None, kernel_size: int = 3):
        super().__init__()
        conv, bn = conv_nd(dim), batch_norm_nd(dim)
        kernel = axis_kernel(kernel_size, full_axes(dim, conv_axes))
        self.body = nn.Sequential(
            depthwise_conv_nd(channels, kernel, bias=False),
            bn(channels),
            nn.ReLU(),
            conv(channels, channels, 1, groups=channels, bias=False),
            bn(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if no_autograd():  # inference: ReLU and the residual add overwrite fresh maps (in_place.py)
            dw, bn1, _, pw, bn2 = self.body
            return add_in_place(bn2(pw(torch.relu_(bn1(dw(x))))), x)
        return x + self.body(x)


class GMSBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int,
        *,
        split: Sequence[int],
        conv_axes: Sequence[bool] | None = None,
        norm: str = "batch",
        heads: int = 4,
        head_dim: int = 8,
        mlp_dim: int | None = None,
        depth: int = 1,
    ):
        """`split` = (t, c): channels to the transformer and to the conv branch, t + c = out_channels.
        `mlp_dim` defaults to 2 * out_channels (upstream)."""
        super().__init__()
        t, c = (int(s) for s in split)
        if t <= 0 or c <= 0 or t + c != out_channels:
            raise ValueError(f"GMS split {list(split)} must be two positive widths summing to {out_channels}")
        self.split = (t, c)
        axes = full_axes(dim, conv_axes)
        self.conv1 = ConvNormAct(dim, in_channels, out_channels, 3, conv_axes=axes, norm=norm)
        self.conv2 = ConvNormAct(dim, out_channels, out_channels, 1, norm=norm)
        self.transformer = SparseTransformer(
            t, 2 * out_channels if mlp_dim is None else mlp_dim, depth=depth, heads=heads, head_dim=head_dim
        )
        self.local = DepthwiseBranch(c, dim, conv_axes=axes)
        self.conv3 = ConvNormAct(dim, out_channels, out_channels, 1, norm=norm)
        self.conv4 = ConvNormAct(dim, out_channels + in_channels, out_channels, 3, conv_axes=axes, norm=norm)

    def forward(self, x: torch.Tensor, patch: Sequence[int] | None = None) -> torch.Tensor:
        """`patch`: the sparse-unfold patch per axis; None chooses 2 on even axes and 1 on odd ones."""
        y = self.conv2(self.conv1(x))
        glob, loc = torch.split(y, self.split, dim=1)
        y = torch.cat([self.transformer(glob, patch), self.local(loc)], dim=1)
        return self.conv4(torch.cat([self.conv3(y), x], dim=1))
