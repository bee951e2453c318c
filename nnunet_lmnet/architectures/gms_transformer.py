"""The transformer branch of the GMS block: MobileViT-style *sparse* unfold, pre-norm transformer, fold.

Sparse unfold with patch p (per axis): token n is patch n of the map (row-major), and the P = prod(p) offsets
inside a patch are kept apart. Attention runs over the N tokens of each offset separately, so each of the P
stride-p (dilated) sub-grids of the map attends globally to itself. Nothing here has a parameter that depends on
the patch or the token count (no positional embedding), so the patch is chosen per axis at run time: 2 where that
axis of the map is even, 1 where it is odd (upstream always uses 2 and fails on odd maps).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .in_place import add_in_place, no_autograd


def sparse_patch_size(spatial: Sequence[int]) -> tuple[int, ...]:
    """Patch 2 on even axes, 1 on odd ones: the upstream 2 wherever the map allows it."""
    return tuple(2 if s % 2 == 0 else 1 for s in spatial)


def sparse_unfold(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """(B, C, *S) -> (B, P, N, C), P = prod(patch) offsets, N = patches in row-major order."""
    b, c, *size = x.shape
    if len(patch) != len(size) or any(s % p for s, p in zip(size, patch)):
        raise ValueError(f"map {tuple(size)} is not divisible by the patch {tuple(patch)}")
    grid = [s // p for s, p in zip(size, patch)]
    d = len(size)
    x = x.reshape(b, c, *[v for n, p in zip(grid, patch) for v in (n, p)])  # (B, C, n1, p1, n2, p2, ...)
    x = x.permute(0, *range(3, 2 * d + 2, 2), *range(2, 2 * d + 2, 2), 1)  # (B, p1.., n1.., C)
    return x.reshape(b, math.prod(patch), math.prod(grid), c)


def sparse_fold(z: torch.Tensor, patch: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Exact inverse of `sparse_unfold`: (B, P, N, C) -> (B, C, *size)."""
    b, c = z.shape[0], z.shape[-1]
    grid = [s // p for s, p in zip(size, patch)]
    d = len(size)
    z = z.reshape(b, *patch, *grid, c)  # (B, p1.., n1.., C)
    z = z.permute(0, 2 * d + 1, *[a for i in range(d) for a in (d + 1 + i, 1 + i)])  # (B, C, n1, p1, ...)
    return z.reshape(b, c, *size)


class Attention(nn.Module):
    """Multi-head self-attention over tokens (M, N, C); heads x head_dim is independent of C (upstream 4 x 8)."""

    def __init__(self, channels: int, heads: int = 4, head_dim: int = 8):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.qkv = nn.Linear(channels, 3 * inner, bias=False)
        self.proj = nn.Linear(inner, channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m, n, _ = z.shape
        # Channel index = head * head_dim + d (heads outer), q/k/v in that order along the last axis.
        q, k, v = self.qkv(z).reshape(m, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        # SDPA: default scale head_dim^-0.5 as upstream; its fused kernels keep the softmax in fp32 under
        # autocast and never materialise the N x N matrix, which dominates memory at the level-2 decoder GMS.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(m, n, self.heads * self.head_dim))


class FeedForward(nn.Sequential):
    def __init__(self, channels: int, hidden: int):
        super().__init__(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if no_autograd():  # inference: SiLU overwrites the hidden tokens (in_place.py)
            return self[2](F.silu(self[0](z), inplace=True))
        return super().forward(z)


class TransformerLayer(nn.Module):
    """Pre-norm layer: z + Attn(LN(z)), then z + FFN(LN(z)). Dropout 0 upstream, so none here."""

    def __init__(self, channels: int, heads: int, head_dim: int, mlp_dim: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(channels)
        self.attn = Attention(channels, heads, head_dim)
        self.ffn_norm = nn.LayerNorm(channels)
        self.ffn = FeedForward(channels, mlp_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if no_autograd():  # inference: residual adds into the fresh branch outputs (in_place.py)
            z = add_in_place(self.attn(self.attn_norm(z)), z)
            return add_in_place(self.ffn(self.ffn_norm(z)), z)
        z = z + self.attn(self.attn_norm(z))
        return z + self.ffn(self.ffn_norm(z))


class SparseTransformer(nn.Module):
    """(B, C, *S) -> (B, C, *S): sparse unfold -> transformer layers (no final norm) -> fold."""

    def __init__(self, channels: int, mlp_dim: int, *, depth: int = 1, heads: int = 4, head_dim: int = 8):
        super().__init__()
        self.layers = nn.Sequential(*[TransformerLayer(channels, heads, head_dim, mlp_dim) for _ in range(depth)])

    def forward(self, x: torch.Tensor, patch: Sequence[int] | None = None) -> torch.Tensor:
        size = x.shape[2:]
        patch = sparse_patch_size(size) if patch is None else tuple(patch)
        z = sparse_unfold(x, patch)
        b, p, n, c = z.shape
        z = self.layers(z.reshape(b * p, n, c))  # each offset sub-grid is its own attention batch
        return sparse_fold(z.reshape(b, p, n, c), patch, size)
