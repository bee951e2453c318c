"""nn.Conv2d / nn.Conv3d whose inference forward on CPU takes the fast kernel PyTorch's backend choice misses.

Same parameters, state_dict and function as the torch classes. Only where nothing records the forward
(nnU-Net's predictor and validation; ``in_place.no_autograd``) on a float32 CPU map does the route change:

- Ungrouped convolutions with a kernel wider than 1 run on oneDNN. PyTorch sends a single-sample convolution
  with a kernel at most 3 wide to its generic im2col kernel whenever channels x the first two spatial sizes is
  at most 20480 (a heuristic that assumes the map is small), which is every 3D level with few channels: measured
  at 1 thread, 3D 64^3 4 -> 16 3x3x3 117 ms vs 10 ms, 64 -> 64 at 16^3 19 vs 7 ms. nnU-Net predicts one patch at
  a time; a training batch of two already gets oneDNN.
- 1x1 ungrouped, unstrided convolutions go through ``pointwise_conv_with``: one matrix product on a
  channels-last map (3D 64^3 32 -> 64: 42 ms vs 107 ms for PyTorch's own choice on that layout).
Under autograd (training: bit-identical to before), autocast, torch.compile, torch.export, on CUDA and in
float64 the plain convolution runs. torch's FLOP counter does not know the oneDNN op; benchmark/complexity.py
registers it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .in_place import no_autograd
from .pointwise import pointwise_conv_with


def _fast_route(conv: nn.modules.conv._ConvNd, x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """"pointwise", "onednn" or None (the plain convolution)."""
    if (conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str)
            or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or not no_autograd() or torch.is_autocast_enabled("cpu")):
        return None
    if all(k == 1 for k in conv.kernel_size) and all(s == 1 for s in conv.stride) and not any(conv.padding):
        return "pointwise"
    if torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled:
        return "onednn"
    return None


class _FastInferenceForward:
    """Mixin for nn.ConvNd: `_conv_forward` (also what folded-BatchNorm forms call) picks `_fast_route`."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        route = _fast_route(self, x, weight)
        if route == "pointwise":
            return pointwise_conv_with(x, weight, bias)
        if route == "onednn":
            return torch.mkldnn_convolution(x, weight, bias, self.padding, self.stride, self.dilation, 1)
        return super()._conv_forward(x, weight, bias)


class Conv2d(_FastInferenceForward, nn.Conv2d):
    pass


class Conv3d(_FastInferenceForward, nn.Conv3d):
    pass
