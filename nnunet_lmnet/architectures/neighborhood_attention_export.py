"""The neighbourhood attention as torch.export traces it (ONNX): whole-map operators instead of per-offset loops.

Same function as `neighborhood_attention` (NATTEN <= 0.15 semantics; see that module). Eager and compiled runs
never take this path. The form is built for ONNX Runtime's CPU kernels, measured there:

- The prod(k) keys (values) of every window come from one grouped convolution with one-hot filters over the
  valid positions: each channel gives prod(k) output channels, one per key offset, and valid position j holds
  the window that starts at j. Per-offset index_select gathers (the previous form) copy single elements on the
  innermost axis and were the largest part of the attention.
- Interior queries (k//2 or more from every border) have the window of valid position i - k//2 and the same
  bias row everywhere: one pass over the valid grid with the bias broadcast. Near a border the window is shifted
  inwards (s(i) = clamp(i - k//2, 0, L - k)) and the bias row changes: those queries are thin slabs, two per
  axis, each with its own (small) windows and bias; the output is stitched together by one concat per axis.
- The offsets are an axis of their own inside each head, (B, heads, [head_dim,] prod(k), *spatial): products,
  bias, softmax and the weighted sum are each one operator over the whole map (no stack of per-offset maps, no
  transposes), and the softmax's normalisation divides the output, head_dim values per query, not its weights.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .neighborhood_attention import _offsets, _relative_rows, _table_window

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_SPATIAL = 3  # planar maps: (B, heads, head_dim, *spatial); window stacks: (B, heads, head_dim, prod(k), *spatial)


def window_stack(x: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    """Planar (B, heads, d, *S) -> (B, heads, d, prod(k), *(S - k + 1)): at valid position j, the prod(k) maps of
    the window starting at j, row-major offsets."""
    batch, heads, d, *spatial = x.shape
    channels, n = heads * d, math.prod(kernel)
    filters = torch.eye(n, dtype=x.dtype, device=x.device).reshape(n, 1, *kernel).repeat(channels, 1, *[1] * len(kernel))
    valid = _CONV[len(kernel)](x.reshape(batch, channels, *spatial), filters, groups=channels)
    return valid.reshape(batch, heads, d, n, *valid.shape[2:])


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Scaled planar queries (B, heads, d, *Q) and window stacks broadcastable to (B, heads, d, prod(k), *Q)."""
    products = q.unsqueeze(3) * keys
    logits = products.squeeze(2) if q.shape[2] == 1 else products.sum(2)  # LM-Net's finest level: d = 1
    if bias is not None:
        logits = logits + bias
    # softmax written out (ONNX Runtime's Softmax on an inner axis runs through transposes)
    weights = (logits - logits.amax(2, keepdim=True)).exp()
    return (weights.unsqueeze(2) * values).sum(3) / weights.sum(2, keepdim=True)


def planar_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None,
                     kernel: Sequence[int], scale: float) -> torch.Tensor:
    """Planar (B, heads, d, *S) q, k, v in the compute dtype -> planar output (B, heads, d, *S)."""
    nd, spatial = len(kernel), q.shape[_SPATIAL:]
    rows = _relative_rows(spatial, kernel, q.device)
    half = [kk // 2 for kk in kernel]
    keys, values = window_stack(k, kernel), window_stack(v, kernel)
    q = q * scale
    table = None if rpb is None else rpb.to(q.dtype)
    windows = None if table is None else torch.stack(
        [table[_table_window(offset, kernel)] for offset in _offsets(kernel)], 1)  # (heads, prod(k), *k)

    def interior(t: torch.Tensor, axis: int) -> torch.Tensor:
        return t.narrow(_SPATIAL + axis, half[axis], spatial[axis] - 2 * half[axis])

    inner_q = q
    for axis in range(nd):
        inner_q = interior(inner_q, axis)
    # interior queries: window = valid position, bias row k//2 on every axis
    centre = None if windows is None else windows[(slice(None), slice(None), *(slice(h, h + 1) for h in half))]
    out = _attend(inner_q, keys, values, centre)
    # border slabs, innermost axis first: the slabs of axis a span the interior of the axes before it and the
    # whole of the axes after it (whose borders are edge-padded windows: clamped starts)
    for a in reversed(range(nd)):
        if half[a] == 0:
            continue
        pad = [p for b in reversed(range(nd)) for p in ((half[b], half[b]) if b > a else (0, 0))]
        parts = []
        for first, window in ((0, 0), (spatial[a] - half[a], spatial[a] - kernel[a])):
            slab_q = q.narrow(_SPATIAL + a, first, half[a])
            for b in range(a):
                slab_q = interior(slab_q, b)
            stacks = []
            for x in (k, v):
                # the slab's one window on axis a, broadcast over it, from a strip of k (v) as thin as the kernel
                # (a slice of the whole-map stack on the innermost axis measured several times slower)
                stack = window_stack(x.narrow(_SPATIAL + a, window, kernel[a]), kernel)
                if any(pad):
                    shape = stack.shape
                    stack = F.pad(stack.flatten(1, 3), pad, mode="replicate")
                    stack = stack.reshape(*shape[:4], *stack.shape[2:])
                stacks.append(stack)
            bias = windows
            if bias is not None:
                for b in reversed(range(nd)):  # innermost first: the last gather copies whole rows
                    index = (rows[b][half[b]:half[b] + 1] if b < a else rows[b][first:first + half[a]] if b == a
                             else rows[b])
                    bias = bias.index_select(2 + b, index)
            parts.append(_attend(slab_q, *stacks, bias))
        out = torch.cat([parts[0], out, parts[1]], _SPATIAL + a)
    return out
