"""The neighbourhood attention as torch.export traces it (ONNX): whole-map operators instead of per-offset loops.

Same function as `neighborhood_attention` (NATTEN <= 0.15 semantics; see that module). Eager and compiled runs
never take this path. The form is built for ONNX Runtime's CPU kernels, measured there:

- The prod(k) neighbours of every query come from one grouped convolution with one-hot filters (each channel
  gives prod(k) output channels, one per key offset) over the valid positions, edge-padded by k//2 on every
  axis: query i's window starts at s(i) = clamp(i - k//2, 0, L - k), which is the valid position
  clamp(i - k//2, 0, L - k) itself, i.e. exactly what edge padding repeats. Per-offset index_select gathers
  (the previous form) copy single elements on the innermost axis and were the largest part of the attention.
- The offsets are an axis of their own inside each head, (B, heads, [head_dim,] prod(k), *spatial): products,
  bias, softmax and the weighted sum are each one operator over the whole map, and the offset axis is reduced
  where it is (no stack of per-offset maps, no transposes).
- The relative-position bias is gathered from the per-offset table windows (heads, prod(k), *k) one axis at a
  time, innermost first, so only the last gather writes a map-sized tensor and it copies whole rows.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _one_hot_filters(channels: int, kernel: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """(channels * prod(k), 1, *k): output channel c * prod(k) + n picks offset n (row-major) of channel c."""
    n = math.prod(kernel)
    eye = torch.eye(n, dtype=like.dtype, device=like.device).reshape(n, 1, *kernel)
    return eye.repeat(channels, 1, *[1] * len(kernel))


def neighbour_maps(x: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    """Planar (B, heads, d, *S) -> (B, heads, d, prod(k), *S): the key (or value) at every offset of every
    query's window, offsets row-major as `_offsets` lists them."""
    batch, heads, d, *spatial = x.shape
    channels = heads * d
    valid = _CONV[len(kernel)](x.reshape(batch, channels, *spatial), _one_hot_filters(channels, kernel, x),
                               groups=channels)
    pad = [p for k in reversed(kernel) for p in (k // 2, k // 2)]  # F.pad lists the last axis first
    if any(pad):
        valid = F.pad(valid, pad, mode="replicate")
    return valid.reshape(batch, heads, d, math.prod(kernel), *spatial)


def bias_maps(table: torch.Tensor, rows: Sequence[torch.Tensor], kernel: Sequence[int]) -> torch.Tensor:
    """(heads, prod(k), *S): table[h, r_0(i_0) + o_0, r_1(i_1) + o_1, ...] for offset n = (o_0, o_1, ...), with
    `rows` the per-axis relative rows r(i) (`_relative_rows`)."""
    offsets = [()]
    for k in kernel:
        offsets = [(*o, i) for o in offsets for i in range(k)]
    windows = torch.stack([table[(slice(None), *(slice(o, o + k) for o, k in zip(off, kernel)))]
                           for off in offsets], 1)  # (heads, prod(k), *k)
    for axis in reversed(range(len(kernel))):
        windows = windows.index_select(2 + axis, rows[axis])
    return windows


def planar_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor | None,
                     rows: Sequence[torch.Tensor], kernel: Sequence[int], scale: float) -> torch.Tensor:
    """Planar (B, heads, d, *S) q, k, v in the compute dtype -> planar output (B, heads, d, *S)."""
    products = (q * scale).unsqueeze(3) * neighbour_maps(k, kernel)  # (B, heads, d, prod(k), *S)
    logits = products.squeeze(2) if q.shape[2] == 1 else products.sum(2)  # LM-Net's finest level: d = 1
    if table is not None:
        logits = logits + bias_maps(table, rows, kernel)  # broadcast over the batch
    # softmax written out: ONNX Runtime's Softmax on an inner axis runs through transposes
    weights = (logits - logits.amax(2, keepdim=True)).exp()
    weights = weights / weights.sum(2, keepdim=True)
    return (weights.unsqueeze(2) * neighbour_maps(v, kernel)).sum(3)
