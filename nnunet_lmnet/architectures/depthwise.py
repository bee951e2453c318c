"""Depthwise convolution (stride 1, odd kernel, 'same' padding) with a faster backward on CPU.

Same function and gradients as ``F.conv{2,3}d(x, w, b, padding=k // 2, groups=C)`` (up to the order of the
sums). On CPU PyTorch's depthwise kernels are far from uniform in speed, and this module routes every part of a
training step to the fast ones:

- Input gradient: PyTorch computes it with a generic backward kernel that is 5-30x slower than a forward
  depthwise convolution, yet for stride 1 and symmetric padding it *is* one: the output gradient correlated with
  the spatially flipped kernel.
- 3D kernels that are flat on some axes run as 2D convolutions on views of the same memory (no copy): a
  (kd, 1, 1) kernel on (N, C, D, H*W), (1, 1, kw) on (N, C, D*H, W), and (1, kh, kw) on channels-last maps as
  (N*D, C, H, W). oneDNN's 2D depthwise kernels are 3-50x faster than its 3D ones here; (k, 1, 1) even falls
  back to PyTorch's slow im2col path in 3D.
- Weight gradient: oneDNN's is fast only for kernels at most 3 wide on the innermost axis (a 5x5 one is ~13x
  slower than a 3x3 one, a 1x1 one ~15x, 3D ones 3-10x slower than the equivalent 2D work). `weight_grad`
  computes it as a few such fast 2D weight gradients: depth offsets of a 3D kernel become shifts along the
  batch of (N*D') planes of a depth-padded copy, and kernel columns beyond 3 become chunks of at most 3
  columns read from a zero-padded channels-last copy at an offset of whole pixels (an offset view, no copy
  per chunk). The output gradient is zero-padded so that shifted reads never mix batch items or rows.

On CUDA, cuDNN's backward is already fast: the plain convolution is used there, and under torch.compile.
Mixed precision: the forward runs under the caller's autocast; the backward casts to the output gradient's
dtype with autocast off, as autograd's own convolution backward computes in the forward's dtype.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAX_FAST_WIDTH = 3  # oneDNN's depthwise weight gradient is fast up to this many kernel columns


def _plane_mode(x: torch.Tensor, kernel: Sequence[int]) -> str | None:
    """How a 3D map with `kernel` runs as a 2D one on the same memory: "depth", "rows", "batch" or None."""
    kd, kh, kw = kernel
    if kh == 1 and kw == 1 and x.stride(3) == x.shape[4] * x.stride(4):
        return "depth"  # (N, C, D, H*W), kernel (kd, 1)
    if kd == 1 and kh == 1 and x.stride(2) == x.shape[3] * x.stride(3):
        return "rows"  # (N, C, D*H, W), kernel (1, kw)
    if kd == 1 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return "batch"  # (N*D, C, H, W) channels-last, kernel (kh, kw)
    return None


def _to_planes(x: torch.Tensor, mode: str) -> torch.Tensor:
    n, c, d, h, w = x.shape
    if mode == "depth":
        return x.view(n, c, d, h * w)
    if mode == "rows":
        return x.view(n, c, d * h, w)
    return x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w)


def _from_planes(y: torch.Tensor, shape: Sequence[int], mode: str) -> torch.Tensor:
    n, c, d, h, w = shape
    if mode == "batch":
        return y.reshape(n, d, c, h, w).permute(0, 2, 1, 3, 4)
    return y.reshape(n, c, d, h, w)


def _plane_kernel(kernel: Sequence[int], mode: str) -> tuple[int, int]:
    kd, kh, kw = kernel
    return {"depth": (kd, 1), "rows": (1, kw), "batch": (kh, kw)}[mode]


def _conv_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise 'same' convolution; 3D ones that are flat on some axes run as 2D on views of x."""
    kernel = tuple(weight.shape[2:])
    mode = _plane_mode(x, kernel) if x.ndim == 5 else None
    if mode is None:
        return _CONV[x.ndim - 2](x, weight, bias, padding=tuple(k // 2 for k in kernel), groups=x.shape[1])
    k2 = _plane_kernel(kernel, mode)
    y = F.conv2d(_to_planes(x, mode), weight.reshape(weight.shape[0], 1, *k2), bias,
                 padding=tuple(k // 2 for k in k2), groups=x.shape[1])
    return _from_planes(y, x.shape, mode)


def _native_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: Sequence[int],
                        padding: Sequence[int]) -> torch.Tensor:
    """PyTorch's own depthwise weight gradient (stride 1, the given padding), shape (C, 1, *kernel)."""
    dims, channels = x.ndim - 2, x.shape[1]
    dummy = x.new_empty((channels, 1, *kernel))
    return torch.ops.aten.convolution_backward(
        grad, x, dummy, None, [1] * dims, list(padding), [1] * dims, False, [0] * dims, channels,
        [False, True, False])[1]


def _column_starts(width: int, chunk: int) -> list[int]:
    """First kernel column of each chunk of `chunk` columns covering `width` (the last one may overlap)."""
    return sorted({min(j * chunk, width - chunk) for j in range(math.ceil(width / chunk))})


def _shifted_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    """Weight gradient of a 'same' depthwise conv of (N, C, D, H, W) maps as kd * ceil(kw / 3) fast 2D ones.

    x is copied once into a channels-last buffer, zero-padded on every axis, with `starts[-1]` pixels of slack at
    the end; grad once, zero-padded in depth and to the width a chunk's valid convolution of a padded row gives.
    Depth offset a and column chunk s then read the channels-last view of the buffer that starts a planes and s
    pixels later: whatever it runs into beyond a row or a batch item meets zeros of grad.
    """
    n, c, d, h, w = x.shape
    kd, kh, kw = kernel
    pd, ph, pw = kd // 2, kh // 2, kw // 2
    dp, hp, wp = d + 2 * pd, h + 2 * ph, w + 2 * pw
    chunk = min(kw, _MAX_FAST_WIDTH)
    starts = _column_starts(kw, chunk)
    plane = hp * wp * c
    buf = x.new_zeros(n * dp * plane + starts[-1] * c)
    buf[:n * dp * plane].view(n, dp, hp, wp, c)[:, pd:pd + d, ph:ph + h, pw:pw + w] = x.permute(0, 2, 3, 4, 1)
    wg = wp - chunk + 1  # >= w; the columns beyond w are zeros
    padded_grad = grad.new_zeros(n, dp, h, wg, c)
    padded_grad[:, pd:pd + d, :, :w] = grad.permute(0, 2, 3, 4, 1)
    b = n * dp - 2 * pd  # planes whose depth window of kd planes stays inside the buffer
    g = padded_grad.view(n * dp, h, wg, c)[pd:pd + b].permute(0, 3, 1, 2)
    out = grad.new_empty(c, kd, kh, kw)
    for a in range(kd):
        for s in starts:
            xs = buf.as_strided((b, c, hp, wp), (plane, 1, wp * c, c), buf.storage_offset() + a * plane + s * c)
            out[:, a, :, s:s + chunk] = _native_weight_grad(g, xs, (kh, chunk), (0, 0))[:, 0]
    return out.unsqueeze(1)


def weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    """d loss / d weight of ``conv(x, weight, padding=k // 2, groups=C)`` from d loss / d output: (C, 1, *k)."""
    kernel = tuple(int(k) for k in kernel)
    if x.ndim == 5:
        mode = _plane_mode(x, kernel)
        if mode is not None and _plane_mode(grad, kernel) == mode:
            planar = weight_grad(_to_planes(grad, mode), _to_planes(x, mode), _plane_kernel(kernel, mode))
            return planar.reshape(x.shape[1], 1, *kernel)
        return _shifted_weight_grad(grad, x, kernel)
    if x.ndim == 4 and kernel[1] > _MAX_FAST_WIDTH:
        return _shifted_weight_grad(grad.unsqueeze(2), x.unsqueeze(2), (1, *kernel)).squeeze(2)
    return _native_weight_grad(grad, x, kernel, tuple(k // 2 for k in kernel))


class _DepthwiseConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _conv_same(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        dims = x.ndim - 2
        grad_x = grad_w = grad_b = None
        with torch.autocast(x.device.type, enabled=False):
            w = weight.to(grad.dtype)
            if ctx.needs_input_grad[0]:
                grad_x = _conv_same(grad, w.flip(list(range(2, 2 + dims))), None).to(x.dtype)
            if ctx.needs_input_grad[1]:
                grad_w = weight_grad(grad, x.to(grad.dtype), w.shape[2:]).to(weight.dtype)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_b = grad.sum(dim=[0, *range(2, 2 + dims)]).to(weight.dtype)
        return grad_x, grad_w, grad_b


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   padding: Sequence[int]) -> torch.Tensor:
    """Depthwise conv with `weight` (C, 1, *k), k odd, `padding` = k // 2 per axis (the 'same' size)."""
    padding = tuple(int(p) for p in padding)
    if torch.compiler.is_exporting() and x.ndim == 5 and isinstance(x.shape[2], int):
        return _exported_depthwise_3d(x, weight, bias, padding)
    if x.device.type != "cpu" or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return _CONV[x.ndim - 2](x, weight, bias, padding=padding, groups=x.shape[1])
    if not torch.is_grad_enabled():  # inference: the same 2D routes for flat 3D kernels
        return _conv_same(x, weight, bias)
    return _DepthwiseConvFn.apply(x, weight, bias)


def _exported_depthwise_3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           padding: Sequence[int]) -> torch.Tensor:
    """A 3D depthwise 'same' conv as k_depth 2D depthwise convs over (B, C * D, H, W), as torch.export traces it
    (ONNX): ONNX Runtime has blocked CPU kernels for 2D convolutions only and runs a 3D one through im2col,
    measured 8x slower per MAC for LM-Net's 5x5x5 kernels (38% of its 3D forward). Depth slice z of the
    zero-padded input, seen as C * D channels, meets the kernel's slice z; the k_depth results add up. Needs a
    fixed depth (the groups of a Conv are an attribute): with a dynamic depth the plain conv3d is exported."""
    batch, channels, depth, *plane = x.shape
    padded = F.pad(x, (0, 0, 0, 0, padding[0], padding[0]))
    out = None
    for z in range(weight.shape[2]):
        taps = weight[:, :, z].repeat_interleave(depth, 0)  # channel c * D + j uses the kernel of channel c
        first_bias = bias.repeat_interleave(depth) if bias is not None and out is None else None
        # contiguous: the map may be channels-last, and torch.onnx decomposes this reshape to a view
        part = F.conv2d(padded[:, :, z:z + depth].clone(memory_format=torch.contiguous_format).reshape(batch, channels * depth, *plane), taps, first_bias,
                        padding=tuple(padding[1:]), groups=channels * depth)
        out = part if out is None else out + part
    return out.reshape(batch, channels, depth, *plane)


class _DepthwiseForward:
    """Mixin for nn.ConvNd holding a depthwise, stride-1, 'same' convolution: forward through `depthwise_conv`.
    The parameters, state_dict and repr are nn.ConvNd's, so checkpoints and weight mappings are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv(x, self.weight, self.bias, self.padding)


class DepthwiseConv1d(_DepthwiseForward, nn.Conv1d):
    pass


class DepthwiseConv2d(_DepthwiseForward, nn.Conv2d):
    pass


class DepthwiseConv3d(_DepthwiseForward, nn.Conv3d):
    pass


_CLASSES = {1: DepthwiseConv1d, 2: DepthwiseConv2d, 3: DepthwiseConv3d}


def depthwise_conv_nd(channels: int, kernel: Sequence[int], bias: bool) -> nn.Module:
    """A depthwise conv of `channels` with an odd `kernel` (one size per spatial axis) and 'same' padding."""
    kernel = tuple(int(k) for k in kernel)
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"depthwise kernel must be odd on every axis, got {list(kernel)}")
    return _CLASSES[len(kernel)](channels, channels, kernel, padding=tuple(k // 2 for k in kernel), groups=channels,
                                 bias=bias)
