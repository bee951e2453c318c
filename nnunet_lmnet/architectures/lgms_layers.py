"""Small conv units LGMSNet is assembled from: norm choice, conv-norm-act, up-conv and fusion conv.

Every unit takes ``conv_axes`` (one bool per spatial axis, False where the nnU-Net plan's kernel is 1 on that axis)
so a level with plan kernel (1, 3, 3) convolves only in-plane; ``None`` means all axes (upstream behaviour).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .in_place import activation_in_place, no_autograd
from .ops import (batch_norm_nd, bn_scale, channels_last_on_cpu, conv_nd, fold_bn, instance_norm_nd,
                  interpolation_mode, same_padding)

NORMS = ("batch", "instance", "instance_affine")


def default_norm(dim: int) -> str:
    """Upstream's choice: BatchNorm in 2D, InstanceNorm3d(affine=False) in 3D."""
    return "batch" if dim == 2 else "instance"


def make_norm(kind: str, dim: int, channels: int) -> nn.Module:
    if kind == "batch":
        return batch_norm_nd(dim)(channels)
    if kind == "instance":
        return instance_norm_nd(dim)(channels)  # PyTorch default affine=False, as upstream 3D
    if kind == "instance_affine":
        return instance_norm_nd(dim)(channels, affine=True)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def full_axes(dim: int, conv_axes: Sequence[bool] | None) -> tuple[bool, ...]:
    axes = (True,) * dim if conv_axes is None else tuple(bool(a) for a in conv_axes)
    if len(axes) != dim:
        raise ValueError(f"conv_axes has {len(axes)} entries for {dim} spatial dims")
    return axes


def axis_kernel(size: int, conv_axes: Sequence[bool]) -> tuple[int, ...]:
    """Kernel `size` on the axes the level convolves along, 1 on the others."""
    return tuple(size if on else 1 for on in conv_axes)


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation (``act=None`` leaves the activation out)."""

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        conv_axes: Sequence[bool] | None = None,
        norm: str = "batch",
        act: type[nn.Module] | None = nn.SiLU,
        bias: bool = False,
        groups: int = 1,
    ):
        kernel = axis_kernel(kernel_size, full_axes(dim, conv_axes))
        layers = [
            conv_nd(dim)(in_channels, out_channels, kernel, padding=same_padding(kernel), groups=groups, bias=bias),
            make_norm(norm, dim, out_channels),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self[0], self[1]
        if self.training or not _foldable(norm):
            if not no_autograd():
                return super().forward(x)
            y = norm(conv(x))  # eval InstanceNorm (3D): a fresh map the activation may overwrite
        else:
            # eval with BatchNorm: folded into the conv, one pass over the map fewer, the same affine map
            y = conv._conv_forward(x, *fold_bn(conv.weight, norm, conv.bias))
        if len(self) < 3:
            return y
        return activation_in_place(self[2], y) if no_autograd() else self[2](y)


def _foldable(norm: nn.Module) -> bool:
    """An affine BatchNorm with running statistics (InstanceNorm normalises per sample: nothing to fold)."""
    return (isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.affine and norm.running_mean is not None)


class UpConv(nn.Module):
    """Interpolate to the skip's exact size, then 3x3 conv (bias) -> norm -> ReLU.

    Interpolating to a size (not by a factor 2) is what lets anisotropic plan strides such as (1, 2, 2) work.
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, *, conv_axes=None, norm: str = "batch"):
        super().__init__()
        self.mode = interpolation_mode(dim)
        self.conv = ConvNormAct(
            dim, in_channels, out_channels, 3, conv_axes=conv_axes, norm=norm, act=nn.ReLU, bias=True
        )

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        # In eval on CPU the interpolation and the conv after it run on a channels-last map (the interpolation
        # 3.5x faster: 3D 32 channels 32^3 -> 64^3, 20 vs 71 ms at 1 thread): LGMSNet 3D 64^3 inference 5%
        # faster, 2D 3%. Training keeps the layout it gets (its results stay bit for bit the plain form's).
        if not self.training:
            x = channels_last_on_cpu(x)
        x = F.interpolate(x, size=tuple(size), mode=self.mode, align_corners=False)
        return self.conv(x)


class FusionConv(nn.Sequential):
    """Decoder fusion of the concatenated (skip, up) maps: grouped 3x3 -> 1x1 (x4 width) -> 1x1.

    Upstream (CMUNeXt style) puts the activation *before* the norm and uses biases; kept as is.
    """

    def __init__(
        self, dim: int, in_channels: int, out_channels: int, *, conv_axes=None, norm: str = "batch", groups: int = 2
    ):
        conv = conv_nd(dim)
        kernel = axis_kernel(3, full_axes(dim, conv_axes))
        hidden = 4 * out_channels
        super().__init__(
            conv(in_channels, in_channels, kernel, padding=same_padding(kernel), groups=groups, bias=True),
            nn.GELU(),
            make_norm(norm, dim, in_channels),
            conv(in_channels, hidden, 1, bias=True),
            nn.GELU(),
            make_norm(norm, dim, hidden),
            conv(hidden, out_channels, 1, bias=True),
            nn.GELU(),
            make_norm(norm, dim, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        # eval: BatchNorms folded into the 1x1 convs after them (`_norm_then_pointwise`; the last norm has no conv
        # after it), and without autograd the GELUs overwrite their input (3D 64^3 level 0, InstanceNorm: the
        # block 398 -> 344 ms at 1 thread; a new map is page-faulted in on first write, in_place.py)
        act = activation_in_place if no_autograd() else (lambda module, y: module(y))
        y = act(self[1], self[0](x))
        y = act(self[4], _norm_then_pointwise(self[2], self[3], y))
        return self[8](act(self[7], _norm_then_pointwise(self[5], self[6], y)))


def _norm_then_pointwise(norm: nn.Module, conv: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Tensor:
    """conv(norm(x)) for an eval norm before an unpadded 1x1 conv. An eval BatchNorm is a per-channel affine map
    and goes into the conv (scale into its input columns, shift through the weights into the bias): one pass
    over the map fewer. InstanceNorm (3D) normalises with each sample's statistics, and computing those apart
    (torch.var_mean) costs more than the pass it saves (measured: 3D 64 channels 64^3, 92 ms vs 64 ms for the
    whole InstanceNorm), so it runs as it is."""
    if not _foldable(norm):
        return conv(norm(x))
    scale = bn_scale(norm)
    shift = norm.bias - norm.running_mean * scale
    weight = conv.weight * scale.reshape(1, -1, *([1] * (conv.weight.ndim - 2)))
    bias = conv.weight.flatten(1) @ shift
    return conv._conv_forward(x, weight, bias if conv.bias is None else conv.bias + bias)
