"""Exact neighbourhood attention (NATTEN <= 0.15 semantics, dilation 1) in pure PyTorch, for 1D, 2D and 3D.

Semantics, per spatial axis of length L with an odd kernel k: query i attends to the keys [s(i), s(i) + k) with
s(i) = clamp(i - k//2, 0, L - k). Near a border the window is shifted inwards rather than zero-padded, so every
query sees exactly prod(k) real keys. logits = q.k * scale (+ rpb[(j - i) + (k - 1)] per axis), softmax over
the prod(k) neighbours, output = weighted sum of v.

Memory: the kernel loops over the prod(k) key offsets. For offset o the key index on each axis is s(i) + o,
gathered one axis at a time, so at most one map-sized tensor per axis (the size of k or v) is alive at once.
A custom autograd Function keeps only q, k, v and, in 1D and 2D, the attention weights for backward, and computes
the neighbour maps (and in 3D the weights) again there. An unfold-based version would keep prod(k) copies of k and v.

NATTEN is not dispatched to: its functional API changed incompatibly in 0.15 -> 0.17 -> 0.20 (and >= 0.20
has no RPB), and it cannot be tested here, so no single API can be targeted confidently.
"""
from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .block_threads import block_workers, run_blocks
from .recompute import in_discarded_forward

__all__ = ["neighborhood_attention", "NeighborhoodAttention"]

_FIRST_SPATIAL_AXIS = 3  # inside the kernel q, k, v are "planar": (B, heads, head_dim, *spatial)


def _normalize_kernel(kernel_size: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """Expand an int to all axes and check that every entry is a positive odd int."""
    if isinstance(kernel_size, numbers.Integral):
        entries = [kernel_size] * ndim
    else:
        try:
            entries = list(kernel_size)  # tuple, list, torch.Size, numpy array
        except TypeError:
            entries = [kernel_size] * ndim  # not iterable: rejected below
    if len(entries) != ndim:
        raise ValueError(f"kernel_size {kernel_size} has {len(entries)} entries, expected {ndim} (one per axis)")
    if not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1 and k % 2 for k in entries):
        raise ValueError(f"kernel_size entries must be positive odd ints, got {kernel_size}")
    return tuple(int(k) for k in entries)  # plain ints, also from numpy ints (plans may hold those)


def _rpb_shape(kernel: Sequence[int]) -> tuple[int, ...]:
    return tuple(2 * k - 1 for k in kernel)


def _window_starts(spatial: Sequence[int], kernel: Sequence[int], device: torch.device) -> list[torch.Tensor]:
    """Per axis, the first key index of every query's window: clamp(i - k//2, 0, L - k)."""
    return [
        torch.clamp(torch.arange(length, device=device) - k // 2, 0, length - k)
        for length, k in zip(spatial, kernel)
    ]


def _offsets(kernel: Sequence[int]) -> list[tuple[int, ...]]:
    """All key offsets (one int per axis), row-major: the order `_gather_neighbours` yields them in."""
    return list(itertools.product(*(range(k) for k in kernel)))


class _Scratch:
    """Map-sized scratch tensors reused across the offsets and blocks of one kernel call (gathers, products,
    accumulators). A new tensor each time is a new allocation, and large ones come from the OS as untouched pages:
    a page fault on the first write of every 4 KiB, measured at up to 40% of the kernel's CPU time.
    Callers use a scratch tensor before asking for the same key again."""

    def __init__(self) -> None:
        self._tensors: dict[object, torch.Tensor] = {}

    def get(self, key: object, like: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        """A contiguous tensor of `like`'s dtype and device and of `shape` (default: like's shape)."""
        shape = like.shape if shape is None else torch.Size(shape)
        t = self._tensors.get(key)
        if t is None or t.shape != shape or t.dtype != like.dtype:
            t = self._tensors[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return t


def _scaled_queries(q: torch.Tensor, scale: float, scratch: _Scratch) -> torch.Tensor:
    return torch.mul(q, scale, out=scratch.get("q", q))


def _take_shifted(x: torch.Tensor, axis: int, offset: int, k: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """x.index_select(axis, s + offset) with s(i) = clamp(i - k//2, 0, L - k), built from slices.

    s(i) + offset is `offset` for the first k//2 queries, i - k//2 + offset in the interior and L - k + offset
    for the last k//2, so the result is one repeated row, one shifted slice and one repeated row. On the
    innermost (contiguous) axis this is ~4x faster than index_select, which copies one element at a time.
    """
    half, length = k // 2, x.shape[axis]
    if half == 0:
        return x
    border = list(x.shape)
    border[axis] = half
    return torch.cat(
        [
            x.narrow(axis, offset, 1).expand(border),
            x.narrow(axis, offset, length - 2 * half),
            x.narrow(axis, length - k + offset, 1).expand(border),
        ],
        dim=axis,
        out=out,
    )


def _add_shifted(acc: torch.Tensor, part: torch.Tensor, axis: int, offset: int, k: int) -> None:
    """Adjoint of `_take_shifted`: acc.index_add_(axis, s + offset, part), built from slices."""
    half, length = k // 2, acc.shape[axis]
    acc.narrow(axis, offset, length - 2 * half).add_(part.narrow(axis, half, length - 2 * half))
    acc.narrow(axis, offset, 1).add_(part.narrow(axis, 0, half).sum(axis, keepdim=True))
    acc.narrow(axis, length - k + offset, 1).add_(part.narrow(axis, length - half, half).sum(axis, keepdim=True))


def _gather_neighbours(x: torch.Tensor, kernel: Sequence[int], scratch: _Scratch) -> Iterator[torch.Tensor]:
    """Yield planar x re-indexed so that position i holds x[s(i) + o], for every offset o of `_offsets`.

    Gathers run one axis at a time as a tree: the gather along axis a is shared by all offsets that agree on
    axes < a, so a 3x3x3 kernel costs 3 + 9 + 27 gathers, not 3 * 27. Kernel 1 on an axis is the identity.
    Each tree level writes into one scratch tensor: a yielded map is valid until the next one.
    """

    def visit(t: torch.Tensor, axis: int) -> Iterator[torch.Tensor]:
        if axis == len(kernel):
            yield t
            return
        for o in range(kernel[axis]):
            out = None if kernel[axis] == 1 else scratch.get(("gather", axis), t)
            yield from visit(_take_shifted(t, _FIRST_SPATIAL_AXIS + axis, o, kernel[axis], out), axis + 1)

    return visit(x, 0)


def _scatter_neighbours(weights: torch.Tensor, values: torch.Tensor, kernel: Sequence[int],
                        scratch: _Scratch) -> torch.Tensor:
    """Adjoint of `_gather_neighbours`: the sum over offsets n of weights[n] * values (weights (prod(k), B, heads,
    *spatial), values planar) moved back to the key positions.

    Mirrors the gather tree, so each tree node costs one scatter into a map-sized accumulator (one scratch tensor
    per tree level; the result is valid until the next call with the same scratch).
    """
    offset_ids = itertools.count()

    def visit(axis: int) -> torch.Tensor:
        if axis == len(kernel):
            n = next(offset_ids)
            return torch.mul(weights[n].unsqueeze(2), values, out=scratch.get("term", values))
        if kernel[axis] == 1:
            return visit(axis + 1)
        acc = None
        for o in range(kernel[axis]):
            part = visit(axis + 1)
            if acc is None:
                acc = scratch.get(("scatter", axis), part).zero_()
            _add_shifted(acc, part, _FIRST_SPATIAL_AXIS + axis, o, kernel[axis])
        return acc

    return visit(0)


def _relative_rows(spatial: Sequence[int], kernel: Sequence[int], device: torch.device) -> list[torch.Tensor]:
    """Per axis, every query's offset-0 relative index r(i) = s(i) - i + (k - 1), in [0, k).

    The key at offset o sits at j = s(i) + o, so its bias row (j - i) + (k - 1) is r(i) + o: offset o reads the
    table window [o, o + k) on every axis at the rows r(i).
    """
    return [s - torch.arange(s.numel(), device=device) + (k - 1)
            for s, k in zip(_window_starts(spatial, kernel, device), kernel)]


def _bias_map(table: torch.Tensor, rows: Sequence[torch.Tensor], offset: Sequence[int]) -> torch.Tensor:
    """(heads, *spatial) bias of one key offset: table[h, r_0 + o_0, r_1 + o_1, ...].

    One index_select per axis, innermost first: the early ones act on tables of a few rows, and the last one, on
    the outermost axis, copies whole contiguous slabs. A single broadcast gather over the map (advanced indexing)
    reads the same values element by element and is about 10x slower.
    """
    out = table
    for axis in reversed(range(len(rows))):
        out = out.index_select(axis + 1, rows[axis] + offset[axis])
    return out


def _bias_row_sums(grad_logits: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    """(prod(k), B, heads, *spatial) -> (prod(k), heads, *k): per offset and head, the sum of grad_logits over the
    batch and over the queries whose bias row (`_relative_rows`) is r on every axis, i.e. the gradient of each
    offset's bias window. On an axis of length L, query i has row k-1-i for i < k//2, k//2 in the interior and
    L-1-i in the last k//2: each row is one slice, so the reduction is a slice sum per axis (innermost first,
    shrinking the data at each step) rather than a contraction with one-hot matrices, which copies the logits."""
    t = grad_logits.sum(1) if grad_logits.shape[1] > 1 else grad_logits.select(1, 0)
    for axis in reversed(range(len(kernel))):
        dim, k = 2 + axis, kernel[axis]
        length, half = t.shape[dim], k // 2
        by_row = [None] * k
        for i in range(half):
            by_row[k - 1 - i] = t.narrow(dim, i, 1)
            by_row[half - 1 - i] = t.narrow(dim, length - half + i, 1)
        by_row[half] = t.narrow(dim, half, length - 2 * half).sum(dim, keepdim=True)
        t = torch.cat(by_row, dim) if k > 1 else by_row[0]
    return t


def _table_window(offset: Sequence[int], kernel: Sequence[int]) -> tuple[slice, ...]:
    return (slice(None), *(slice(o, o + k) for o, k in zip(offset, kernel)))


def _to_planar(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, heads, *spatial, d) -> contiguous (B, heads, d, *spatial) in `dtype`: at most one copy, none when x
    already is a view of such a tensor (as NeighborhoodAttention passes it). Callers must not write to it.

    With head_dim outermost among the per-head axes, the gathers move long contiguous runs and the sums over
    head_dim are plain vector adds; with head_dim last (often 1-8 channels) both are several times slower.
    """
    planar = x.movedim(-1, 2)
    if planar.dtype == dtype and planar.is_contiguous():
        return planar
    out = torch.empty(planar.shape, dtype=dtype, device=x.device)
    return out.copy_(planar)


def _dot_over_head_dim(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """sum_d a * b over the head_dim axis (2) of planar maps, into `out`. LM-Net's finest level has head_dim 1
    (12 channels, 12 heads): there the product is the result, without a temporary and a copy."""
    if a.shape[2] == 1:
        return torch.mul(a.select(2, 0), b.select(2, 0), out=out)
    return torch.sum(a * b, dim=2, out=out)


def _weighted_sum(weights: torch.Tensor, maps: Iterator[torch.Tensor], planar: bool = True,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """sum_n weights[n] * maps_n, weights (prod(k), B, heads, *spatial), maps planar (B, heads, d, *spatial) or,
    with planar=False, (B, heads, *spatial). Accumulates in place (into `out` if given): no prod(k)-sized
    temporary."""
    total = out
    for n, m in enumerate(maps):
        w = weights[n].unsqueeze(2) if planar else weights[n]
        if n == 0:
            total = w * m if out is None else torch.mul(w, m, out=out)
        else:
            total.addcmul_(w, m)
    return total


def _softmax_first_axis_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over axis 0, in place: the logits are the largest buffer, so no second one is allocated."""
    logits.sub_(logits.amax(0, keepdim=True)).exp_()
    return logits.div_(logits.sum(0, keepdim=True))


# The kernel runs block by block over (batch items, groups of heads), each block's logits about `_BLOCK_BYTES`:
# the ~10 passes over the prod(k) logit maps (products, bias, softmax, weighted sums) then stay in the CPU's cache
# instead of streaming maps of up to 27 x the input through memory (forward 1.6-1.7x faster than unblocked on
# LM-Net's finest level, 2D 256^2 and 3D 64^3, 12 heads of dimension 1). Heads and batch items are independent:
# every split gives the same values bit for bit. Small maps form a single block.
# With more than one intra-op thread the blocks go to single-threaded worker threads (`block_threads`); a single
# block runs here on all threads, with a budget that grows with them (each of its kernels starts a parallel
# region, so larger ones pay it less often: 8 MiB at 1 thread measured 0.79-0.85x the time of 4 MiB, 2D 256^2 and
# 3D 32^3 forward + backward; 16 MiB at 2 threads 0.34-0.45x).
_BLOCK_BYTES = 8 << 20  # per intra-op thread


def _block_bytes() -> int:
    if torch.compiler.is_compiling():  # a traced graph: no thread count (Dynamo breaks the graph on it)
        return _BLOCK_BYTES
    return _BLOCK_BYTES * max(1, torch.get_num_threads())


def _blocks(q: torch.Tensor, kernel: Sequence[int], itemsize: int,
            budget: int | None = None) -> list[tuple[slice, slice]]:
    """(batch slice, head slice) blocks of planar maps (B, heads, d, *spatial) covering them, each block's logits
    at most `budget` bytes (default `_block_bytes()`) where a single head allows."""
    batch, heads = q.shape[:2]
    budget = _block_bytes() if budget is None else budget
    per_head = math.prod(kernel) * math.prod(q.shape[3:]) * itemsize
    head_step = max(1, min(heads, budget // per_head))
    if head_step < heads:
        return [(slice(b, b + 1), slice(h, min(h + head_step, heads)))
                for b in range(batch) for h in range(0, heads, head_step)]
    batch_step = max(1, budget // (per_head * heads))
    return [(slice(b, min(b + batch_step, batch)), slice(None)) for b in range(0, batch, batch_step)]


def _block_plan(q: torch.Tensor, kernel: Sequence[int]) -> tuple[list[tuple[slice, slice]], int]:
    """(blocks, worker threads): one thread's budget per block when the blocks go to workers."""
    blocks = _blocks(q, kernel, q.element_size(), _BLOCK_BYTES)
    workers = block_workers(q.device, len(blocks))
    return (blocks, workers) if workers > 1 else (_blocks(q, kernel, q.element_size()), 1)


def _block_weights(q_scaled: torch.Tensor, k_block: torch.Tensor, bias, heads: slice, kernel: Sequence[int],
                   scratch: _Scratch, out: torch.Tensor | None = None) -> torch.Tensor:
    """Attention weights (prod(k), b, h, *spatial) of the block of `heads`, into `out` (default: the "weights"
    scratch tensor). `bias`: `_bias_of`'s result."""
    if out is None:
        out = scratch.get("weights", q_scaled, (math.prod(kernel), *q_scaled.shape[:2], *q_scaled.shape[3:]))
    for n, k_n in enumerate(_gather_neighbours(k_block, kernel, scratch)):
        _dot_over_head_dim(q_scaled, k_n, out=out[n])
    if bias is not None:
        table, rows = bias
        for n, offset in enumerate(_offsets(kernel)):
            out[n] += _bias_map(table[heads], rows, offset)  # broadcast over batch
    return _softmax_first_axis_(out)


def _bias_of(rpb, spatial, kernel, compute_dtype, device):
    """(table, relative rows) for `_block_weights`, or None without a relative position bias.
    A gather, not a matrix product: FLOP counters see only the attention's own products (extra_macs)."""
    return None if rpb is None else (rpb.to(compute_dtype), _relative_rows(spatial, kernel, device))


def _attention_forward(q, k, v, rpb, kernel, scale, keep_weights: bool):
    """(output, attention weights (prod(k), B, heads, *spatial) if `keep_weights` else None), block by block.
    Without `keep_weights` each block's weights live in a scratch tensor only: no allocation of prod(k) maps
    (3D: 27x the queries, hundreds of MB whose pages fault in on first write)."""
    compute_dtype = torch.promote_types(q.dtype, torch.float32)  # fp16/bf16 -> fp32, fp64 stays fp64
    qp, kp, vp = (_to_planar(t, compute_dtype) for t in (q, k, v))
    attn = qp.new_empty((math.prod(kernel), *q.shape[:-1])) if keep_weights else None
    out = vp.new_empty(vp.shape)
    bias = _bias_of(rpb, q.shape[2:-1], kernel, compute_dtype, q.device)

    def work(blocks: Iterator[tuple[slice, slice]]) -> list[None]:
        scratch, done = _Scratch(), []
        for b, h in blocks:
            q_scaled = _scaled_queries(qp[b, h], scale, scratch)
            weights = _block_weights(q_scaled, kp[b, h], bias, h, kernel, scratch,
                                     out=attn[:, b, h] if keep_weights else None)
            _weighted_sum(weights, _gather_neighbours(vp[b, h], kernel, scratch), out=out[b, h])
            done.append(None)
        return done

    run_blocks(work, *_block_plan(qp, kernel))
    return out.movedim(2, -1).to(q.dtype), attn


# Up to this many spatial axes the attention weights are kept for backward; with more (3D) backward computes them
# again. Measured per LM-Net training step (CPU, 1 thread, interleaved, batch 2): in 3D 64^3 computing them again
# is 7-10% faster (the weights are 27 maps of the queries' size, 680 MB at level 0) and keeps 0.25x of the default
# network's activations fewer; in 2D 256^2 (9 maps) keeping them is 5% faster.
_KEEP_WEIGHTS_MAX_AXES = 2


class _NeighborhoodAttentionFn(torch.autograd.Function):
    """Forward saves q, k, v and, in 1D/2D, the attention weights; backward recomputes the neighbour maps and, in
    3D, the weights (the same code on the same inputs: the same values bit for bit).

    Inside, logits and weights are laid out (prod(k), B, heads, *spatial): one contiguous slab per offset, and
    a softmax over the leading axis is far faster than over a short trailing one. Both passes run per block of
    `_blocks`.
    """

    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, scale):
        keep = len(kernel) <= _KEEP_WEIGHTS_MAX_AXES
        discarded = in_discarded_forward()  # the first forward of a recomputed block: backward never sees attn
        out, attn = _attention_forward(q, k, v, rpb, kernel, scale, keep_weights=keep and not discarded)
        if keep and discarded:  # same shape and dtype for checkpoint's metadata check, no memory, no work
            attn = q.new_zeros((), dtype=torch.promote_types(q.dtype, torch.float32)).expand(
                math.prod(kernel), *q.shape[:-1])
        ctx.save_for_backward(q, k, v, None if keep else rpb, attn)  # rpb only to compute the weights again
        ctx.kernel, ctx.scale = kernel, scale
        ctx.rpb_meta = None if rpb is None else (rpb.shape, rpb.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, rpb, attn = ctx.saved_tensors
        kernel, scale = ctx.kernel, ctx.scale
        compute_dtype = torch.promote_types(q.dtype, torch.float32)
        need_q, need_k, need_v, need_rpb = ctx.needs_input_grad[:4]
        g = _to_planar(grad_out, compute_dtype)
        qp, kp, vp = (_to_planar(t, compute_dtype) for t in (q, k, v))
        grad_q = torch.empty_like(qp) if need_q else None
        grad_k = torch.empty_like(kp) if need_k else None
        grad_v = torch.empty_like(vp) if need_v else None
        if need_rpb:
            per_window = g.new_zeros((math.prod(kernel), q.shape[1], *kernel))  # (prod(k), heads, *k)

        bias = _bias_of(rpb, q.shape[2:-1], kernel, compute_dtype, q.device)

        def work(blocks: Iterator[tuple[slice, slice]]) -> list[torch.Tensor | None]:
            scratch, rpb_parts = _Scratch(), []
            for b, h in blocks:
                g_b = g[b, h]
                # the scaled queries once per block: for the weights (3D) and for grad_k
                q_scaled = _scaled_queries(qp[b, h], scale, scratch) if attn is None or need_k else None
                a = attn[:, b, h] if attn is not None else _block_weights(q_scaled, kp[b, h], bias, h, kernel,
                                                                          scratch)
                # d loss / d attn, then through the softmax in place: dlogits = attn * (dattn - sum_n attn * dattn).
                grad_logits = scratch.get("grad_logits", a)
                for n, v_n in enumerate(_gather_neighbours(vp[b, h], kernel, scratch)):
                    _dot_over_head_dim(g_b, v_n, out=grad_logits[n])
                grad_logits.sub_(_weighted_sum(a, iter(grad_logits), planar=False)).mul_(a)
                if need_q:
                    _weighted_sum(grad_logits, _gather_neighbours(kp[b, h], kernel, scratch),
                                  out=grad_q[b, h]).mul_(scale)
                if need_k:
                    grad_k[b, h] = _scatter_neighbours(grad_logits, q_scaled, kernel, scratch)
                if need_v:
                    grad_v[b, h] = _scatter_neighbours(a, g_b, kernel, scratch)
                rpb_parts.append(_bias_row_sums(grad_logits, kernel) if need_rpb else None)
            return rpb_parts

        blocks, workers = _block_plan(qp, kernel)
        for (_, h), part in zip(blocks, run_blocks(work, blocks, workers)):
            if part is not None:  # summed here, in block order: the same sums whichever thread ran a block
                per_window[:, h] += part

        grad_rpb = None
        if need_rpb:
            rpb_shape, rpb_dtype = ctx.rpb_meta
            grad_table = g.new_zeros(rpb_shape)
            for n, offset in enumerate(_offsets(kernel)):
                grad_table[_table_window(offset, kernel)] += per_window[n]
            grad_rpb = grad_table.to(rpb_dtype)
        grads = [None if t is None else t.movedim(2, -1).to(src.dtype) for t, src in ((grad_q, q), (grad_k, k),
                                                                                       (grad_v, v))]
        return *grads, grad_rpb, None, None


def neighborhood_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int | Sequence[int],
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Neighbourhood attention with NATTEN <= 0.15 semantics (dilation 1, border windows shifted inwards).

    q, k: (B, heads, *spatial, head_dim); v: (B, heads, *spatial, head_dim_v); 1 to 3 spatial axes.
    kernel_size: odd int or one odd int per spatial axis; every spatial size must be >= its kernel.
    rpb: optional relative position bias (heads, 2k_0-1, ..., 2k_{d-1}-1).
    scale: defaults to head_dim ** -0.5.
    Logits and softmax are computed in float32 (float64 for float64 inputs); the result has q's dtype.
    """
    if q.dim() not in (4, 5, 6):
        raise ValueError(f"q must be (B, heads, *spatial, head_dim) with 1-3 spatial axes, got shape {tuple(q.shape)}")
    if k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"k must match q's shape and v all but the last axis: q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    spatial = tuple(q.shape[2:-1])
    kernel = _normalize_kernel(kernel_size, len(spatial))
    for axis, (length, kk) in enumerate(zip(spatial, kernel)):
        if length < kk:
            raise ValueError(
                f"spatial size {length} on axis {axis} is smaller than the kernel size {kk}; every spatial size "
                f"must be >= its kernel size (NeighborhoodAttention pads small inputs, this function does not)"
            )
    if rpb is not None:
        expected = (q.shape[1], *_rpb_shape(kernel))
        if tuple(rpb.shape) != expected:
            raise ValueError(f"rpb must have shape {expected} (heads, 2k-1 per axis), got {tuple(rpb.shape)}")
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if torch.compiler.is_exporting():
        return _export_form(q, k, v, rpb, kernel, float(scale))
    inputs = (q, k, v) if rpb is None else (q, k, v, rpb)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs)):
        return _attention_forward(q, k, v, rpb, kernel, float(scale), keep_weights=False)[0]
    return _NeighborhoodAttentionFn.apply(q, k, v, rpb, kernel, float(scale))


def _export_form(q, k, v, rpb, kernel, scale):
    """`neighborhood_attention` while torch.export traces it (`neighborhood_attention_export`)."""
    compute_dtype = torch.promote_types(q.dtype, torch.float32)
    out = _planar_export_form(*(t.movedim(-1, 2).to(compute_dtype) for t in (q, k, v)), rpb, kernel, scale)
    return out.movedim(2, -1).to(q.dtype)


def _planar_export_form(qp, kp, vp, rpb, kernel, scale):
    from .neighborhood_attention_export import planar_attention  # that module builds on this one's helpers

    return planar_attention(qp, kp, vp, rpb, kernel, scale)


def _planar_qkv(qkv: torch.Tensor, heads: int, head_dim: int, transpose_2d: bool | None = None) -> torch.Tensor:
    """(B, *S, 3 * heads * head_dim) -> contiguous (3, B, heads, head_dim, *S), the kernel's layout.

    A batch of one (nnU-Net's sliding window; `transpose_2d` None picks it) is one 2-D transpose (S, 3*dim) ->
    (3*dim, S), which PyTorch copies in cache-sized tiles: the general permute below walks the channels with a
    stride and measured 16% of the attention module's time more at LM-Net's finest level (2D 256^2)."""
    batch, spatial, nd = qkv.shape[0], qkv.shape[1:-1], qkv.ndim - 2
    if transpose_2d is None:  # a traced graph (export, compile) keeps one form: its batch may be symbolic
        transpose_2d = not (torch.compiler.is_exporting() or torch.compiler.is_compiling()) and batch == 1
    if transpose_2d and batch == 1:
        return qkv.reshape(-1, qkv.shape[-1]).t().contiguous().reshape(3, 1, heads, head_dim, *spatial)
    qkv = qkv.reshape(batch, *spatial, 3, heads, head_dim)
    return qkv.permute(nd + 1, 0, nd + 2, nd + 3, *range(1, nd + 1)).contiguous()


class NeighborhoodAttention(nn.Module):
    """Multi-head neighbourhood attention on channels-last maps (B, *spatial, dim), like NATTEN's modules.

    qkv Linear -> heads (channel = head * head_dim + d) -> neighbourhood attention (+ RPB) -> proj Linear.
    Inputs smaller than the kernel on an axis are zero-padded at the end of that axis before qkv and the
    output is cropped back, as NATTEN <= 0.15 does. Attention and projection dropout are 0.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int | Sequence[int],
        spatial_dims: int,
        rpb: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kernel_size = _normalize_kernel(kernel_size, spatial_dims)
        self.spatial_dims = spatial_dims
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if rpb:
            self.rpb = nn.Parameter(torch.zeros(num_heads, *_rpb_shape(self.kernel_size)))
            nn.init.trunc_normal_(self.rpb, std=0.02)
        else:
            self.register_parameter("rpb", None)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
            f"spatial_dims={self.spatial_dims}, rpb={self.rpb is not None}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"expected channels-last input (B, {', '.join(['L'] * self.spatial_dims)}, {self.dim}), "
                f"got shape {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[1:-1])
        x = self._pad_to_kernel(x, spatial)
        batch, padded = x.shape[0], tuple(x.shape[1:-1])
        nd = self.spatial_dims

        if torch.compiler.is_exporting():
            out = self._exported(x)
        else:
            # (B, *S, 3*dim) -> one contiguous (3, B, heads, head_dim, *S) copy, passed on as
            # (B, heads, *S, head_dim) views: the kernel's internal layout, so it needs no copies of its own.
            qkv = _planar_qkv(self.qkv(x), self.num_heads, self.head_dim)
            q, k, v = (t.movedim(2, -1) for t in qkv.unbind(0))
            out = neighborhood_attention(q, k, v, self.kernel_size, self.rpb, self.scale)
            out = self.proj(out.permute(0, *range(2, nd + 2), 1, nd + 2).reshape(batch, *padded, self.dim))
        if padded != spatial:
            out = out[(slice(None), *(slice(0, length) for length in spatial))]
        return out

    def _exported(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *S, dim) -> (B, *S, dim), qkv to proj, as torch.export traces it: the tokens as one matrix for the
        two linear layers (ONNX Gemm, bias included) and one transpose of that matrix each way (in ONNX Runtime
        the general permutes of the eager layout ran one per q, k and v)."""
        batch, spatial = x.shape[0], x.shape[1:-1]
        qkv = self.qkv(x.reshape(-1, self.dim)).reshape(batch, -1, 3 * self.dim).transpose(1, 2)  # (B, 3dim, S)
        dtype = torch.promote_types(qkv.dtype, torch.float32)
        q, k, v = qkv.reshape(batch, 3, self.num_heads, self.head_dim, *spatial).to(dtype).unbind(1)
        out = _planar_export_form(q, k, v, self.rpb, self.kernel_size, self.scale)  # (B, heads, d, *S)
        out = out.reshape(batch, self.dim, -1).transpose(1, 2).reshape(-1, self.dim).to(x.dtype)
        return self.proj(out).reshape(batch, *spatial, self.dim)

    def extra_macs(self, inputs: tuple, output) -> int:
        """MACs of QK^T and AV (one per query, neighbour and channel each), which run as element-wise products
        that FLOP counters do not see (the benchmarking counters call this through a forward hook)."""
        x = inputs[0]
        return 2 * x.shape[0] * math.prod(x.shape[1:-1]) * math.prod(self.kernel_size) * self.dim

    def _pad_to_kernel(self, x: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        """Zero-pad the end of every spatial axis shorter than its kernel (NATTEN <= 0.15 behaviour)."""
        missing = [max(k - length, 0) for length, k in zip(spatial, self.kernel_size)]
        if not any(missing):
            return x
        pad = [0, 0]  # F.pad lists the last axis first: channels, then spatial axes from the last one
        for m in reversed(missing):
            pad += [0, m]
        return F.pad(x, pad)
