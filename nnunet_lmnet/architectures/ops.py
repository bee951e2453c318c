"""Pick the torch op for the number of spatial dimensions, so every block is written once for 2D and 3D."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .dense_conv import Conv2d, Conv3d
from .max_pool import MaxPool2d, MaxPool3d

_CONV = {1: nn.Conv1d, 2: Conv2d, 3: Conv3d}  # torch's, with a faster CPU inference route (dense_conv.py)
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_MAX_POOL = {1: nn.MaxPool1d, 2: MaxPool2d, 3: MaxPool3d}
_INTERP = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _check(dim: int) -> int:
    if dim not in _CONV:
        raise ValueError(f"spatial dims must be 1, 2 or 3, got {dim}")
    return dim


def conv_nd(dim: int) -> type[nn.Module]:
    return _CONV[_check(dim)]


def batch_norm_nd(dim: int) -> type[nn.Module]:
    return _BATCH_NORM[_check(dim)]


def instance_norm_nd(dim: int) -> type[nn.Module]:
    return _INSTANCE_NORM[_check(dim)]


def max_pool_nd(dim: int) -> type[nn.Module]:
    return _MAX_POOL[_check(dim)]


def interpolation_mode(dim: int) -> str:
    """'bilinear' in 2D, 'trilinear' in 3D: the upsampling mode both papers use."""
    return _INTERP[_check(dim)]


def as_tuple(value: int | Sequence[int], dim: int) -> tuple[int, ...]:
    """An int becomes (value,) * dim; a sequence must already have `dim` entries."""
    if isinstance(value, int):
        return (value,) * dim
    out = tuple(int(v) for v in value)
    if len(out) != dim:
        raise ValueError(f"expected {dim} values, got {list(out)}")
    return out


def same_padding(kernel_size: Sequence[int]) -> tuple[int, ...]:
    """Padding that keeps the size for odd kernels (k // 2 per axis)."""
    return tuple(k // 2 for k in kernel_size)


def channels_last_on_cpu(x: torch.Tensor) -> torch.Tensor:
    """x in channels-last memory order (same shape and values) when it is a CPU feature map.

    On CPU, oneDNN's convolutions, BatchNorm and depthwise kernels are 1.5-4x faster on channels-last maps, and
    every op after the first keeps the order; callers (nnU-Net's predictor) still pass and get NCHW-shaped
    tensors. On CUDA the layout is left to the caller.
    """
    if x.device.type != "cpu" or x.ndim not in (4, 5):
        return x
    return x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)


def channels_last_in_inference(x: torch.Tensor) -> torch.Tensor:
    """`channels_last_on_cpu` where no gradient is recorded (nnU-Net's validation and predictor), else x.

    In 3D PyTorch returns some dense convolutions (those with few input channels, e.g. LM-Net's strided 12 -> 24
    one) channels-first even from a channels-last input, and every op after them follows. Converting back before
    the next block made LM-Net's 3D inference 19% faster (64^3, 1 thread); in a training step it measured no gain
    against the copies and their backward, so training keeps the layout it gets."""
    return x if torch.is_grad_enabled() else channels_last_on_cpu(x)


def bn_scale(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """Per-channel factor of an eval-mode BN: weight / sqrt(running_var + eps)."""
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def fold_bn(weight: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm,
            conv_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BN that follows a conv (bias-free unless `conv_bias`) into (kernel, bias)."""
    scale = bn_scale(bn)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    centred = -bn.running_mean if conv_bias is None else conv_bias - bn.running_mean
    return weight * scale.reshape(shape), bn.bias + centred * scale
