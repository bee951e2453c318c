"""Per-stage strides and kernel sizes: validated, defaulted and normalised to tuples.

nnU-Net plans give one stride and one kernel per stage (``arch_kwargs['strides']`` / ``['kernel_sizes']``); the
first stride is all ones. The networks here take the first ``n_stages`` of them.
"""
from __future__ import annotations

from typing import Sequence


def resolve_stage_geometry(
    n_stages: int,
    strides: Sequence[Sequence[int]] | None,
    kernel_sizes: Sequence[Sequence[int]] | None,
    spatial_dims: int | None,
) -> tuple[int, list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Return (spatial_dims, strides, kernel_sizes), each list with n_stages per-axis tuples."""
    given = [len(s) for seq in (strides, kernel_sizes) if seq is not None for s in seq]
    dims = set(given) | ({spatial_dims} if spatial_dims is not None else set())
    if len(dims) > 1:
        raise ValueError(f"strides, kernel_sizes and spatial_dims disagree on the number of axes: {sorted(dims)}")
    dim = dims.pop() if dims else 2
    if dim not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {dim}")
    if strides is None:
        strides = [[1] * dim] + [[2] * dim] * (n_stages - 1)
    if kernel_sizes is None:
        kernel_sizes = [[3] * dim] * n_stages
    strides = [tuple(int(v) for v in s) for s in strides]
    kernel_sizes = [tuple(int(v) for v in k) for k in kernel_sizes]
    if len(strides) != n_stages or len(kernel_sizes) != n_stages:
        raise ValueError(
            f"{n_stages} stages need {n_stages} strides and kernel sizes, got {len(strides)} and {len(kernel_sizes)}"
        )
    if any(v != 1 for v in strides[0]):
        raise ValueError(f"the first stage must not downsample (stride {list(strides[0])}); nnU-Net plans start with 1s")
    if any(v < 1 for s in strides for v in s) or any(v < 1 or v % 2 == 0 for k in kernel_sizes for v in k):
        raise ValueError("strides must be >= 1 and kernel sizes odd and >= 1")
    return dim, strides, kernel_sizes


def total_stride(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Cumulative stride of the deepest stage per axis: every input size must be divisible by it."""
    out = [1] * len(strides[0])
    for s in strides:
        out = [a * b for a, b in zip(out, s)]
    return tuple(out)
