"""LM-Net's two transformer paths: the global feature transformer (GFT) at the bottleneck and the local feature
transformer (LFT) on every skip.

GFT: every encoder output is average-pooled to the bottleneck size and concatenated with it (sum of widths
channels), then conv embedding -> one pre-norm global ViT layer (no positional embedding) -> 1x1 conv to the
bottleneck width.

LFT at level i: the maps of levels i-1, i, i+1 (clipped to the encoder levels; the bottleneck is never used) are
brought to level i (strided conv / conv / upsample + conv), concatenated, fused by conv + BN + GELU, then conv
embedding -> one pre-norm neighbourhood-attention layer (NATTEN semantics, relative position bias).

Kernels and strides come from the nnU-Net plans: a level whose kernel is 1 on an axis uses 1 there in every conv
and in the attention window.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .neighborhood_attention import NeighborhoodAttention
from .ops import batch_norm_nd, channels_last_in_inference, conv_nd, fold_bn, interpolation_mode, same_padding
from .pointwise import pointwise_conv_nd
from .recompute import recompute as recompute_block
from .transformer import GlobalSelfAttention, PreNormTransformerLayer


def _conv(dim: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int] | int = 1) -> nn.Module:
    return conv_nd(dim)(cin, cout, tuple(kernel), stride=stride, padding=same_padding(kernel), bias=True)


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear/trilinear resize with align_corners=True, as the official LM-Net upsampling."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode=interpolation_mode(x.ndim - 2), align_corners=True)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, *range(2, x.ndim), 1)


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1))


class GlobalFeatureTransformer(nn.Module):
    def __init__(self, widths: Sequence[int], kernel: Sequence[int], num_heads: int, mlp_ratio: float,
                 dropout: float, pool_ratios: Sequence[Sequence[int]] | None = None):
        super().__init__()
        dim = len(kernel)
        # per encoder level, its size over the bottleneck's (the product of the strides below it): the kernel of
        # the plain average pool that replaces the adaptive one in an export (see _pool_to_bottleneck)
        self.pool_ratios = None if pool_ratios is None else [tuple(int(r) for r in ratio) for ratio in pool_ratios]
        total = sum(widths)
        self.embed = _conv(dim, total, total, kernel)
        self.layer = PreNormTransformerLayer(total, GlobalSelfAttention(total, num_heads), mlp_ratio, dropout)
        self.out = pointwise_conv_nd(dim, total, widths[-1])

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        bottleneck = features[-1]
        size = bottleneck.shape[2:]
        pooled = [self._pool_to_bottleneck(f, size, i) for i, f in enumerate(features[:-1])]
        x = self.embed(torch.cat(pooled + [bottleneck], dim=1))
        b, c = x.shape[:2]
        tokens = self.layer(x.flatten(2).transpose(1, 2))
        return self.out(tokens.transpose(1, 2).reshape(b, c, *size))

    def _pool_to_bottleneck(self, f: torch.Tensor, size: Sequence[int], level: int) -> torch.Tensor:
        if f.ndim == 5 and self.pool_ratios is not None and torch.compiler.is_exporting():
            # torch.onnx has no translation of adaptive_avg_pool3d. An exported input is divisible by the total
            # stride, so every level is exactly ratio x the bottleneck and the adaptive pool is this plain one.
            # Eager and compiled runs keep the adaptive pool (outputs unchanged bit for bit).
            ratio = self.pool_ratios[level]
            return F.avg_pool3d(f, ratio, ratio)
        return F.adaptive_avg_pool2d(f, size) if f.ndim == 4 else F.adaptive_avg_pool3d(f, size)


class LocalPyramid(nn.Module):
    """Bring the maps of levels i-1 (finer), i and i+1 (coarser) to level i and fuse them."""

    def __init__(self, widths: Sequence[int], level: int, kernel: Sequence[int], stride: Sequence[int],
                 has_finer: bool, has_coarser: bool):
        super().__init__()
        dim = len(kernel)
        w = widths[level]
        self.finer = _conv(dim, widths[level - 1], w, kernel, stride) if has_finer else None
        self.same = _conv(dim, w, w, kernel)
        self.coarser = _conv(dim, widths[level + 1], w, kernel) if has_coarser else None
        n_inputs = 1 + has_finer + has_coarser
        self.fuse = nn.Sequential(_conv(dim, n_inputs * w, w, kernel), batch_norm_nd(dim)(w), nn.GELU())

    def forward(self, finer: torch.Tensor | None, same: torch.Tensor, coarser: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.finer is not None:
            parts.append(self.finer(finer))
        parts.append(self.same(same))
        if self.coarser is not None:
            parts.append(self.coarser(upsample_to(coarser, same.shape[2:])))
        x = torch.cat(parts, dim=1)
        if self.training:
            return self.fuse(x)
        conv, bn, gelu = self.fuse  # eval: BN folded into the conv, one pass over the map fewer, same affine map
        return gelu(conv._conv_forward(x, *fold_bn(conv.weight, bn, conv.bias)))


class NeighborhoodTransformer(nn.Module):
    def __init__(self, width: int, kernel: Sequence[int], window: Sequence[int], num_heads: int, rpb: bool,
                 mlp_ratio: float, dropout: float):
        super().__init__()
        dim = len(kernel)
        self.embed = _conv(dim, width, width, kernel)
        attention = NeighborhoodAttention(width, num_heads, tuple(window), spatial_dims=dim, rpb=rpb)
        self.layer = PreNormTransformerLayer(width, attention, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _channels_first(self.layer(_channels_last(channels_last_in_inference(self.embed(x)))))


class LocalFeatureTransformer(nn.Module):
    def __init__(self, widths: Sequence[int], level: int, n_encoder_levels: int, kernel: Sequence[int],
                 stride: Sequence[int], window: Sequence[int], num_heads: int, rpb: bool, mlp_ratio: float,
                 dropout: float, recompute: bool = True):
        super().__init__()
        self.level = level
        self.recompute = recompute
        self.has_finer = level > 0
        self.has_coarser = level + 1 < n_encoder_levels
        self.pyramid = LocalPyramid(widths, level, kernel, stride, self.has_finer, self.has_coarser)
        self.transformer = NeighborhoodTransformer(widths[level], kernel, window, num_heads, rpb, mlp_ratio,
                                                   dropout)

    def _forward(self, finer: torch.Tensor | None, same: torch.Tensor, coarser: torch.Tensor | None) -> torch.Tensor:
        return self.transformer(self.pyramid(finer, same, coarser))

    def forward(self, encoder_features: Sequence[torch.Tensor]) -> torch.Tensor:
        i = self.level
        finer = encoder_features[i - 1] if self.has_finer else None
        coarser = encoder_features[i + 1] if self.has_coarser else None
        # keeps the encoder maps (kept anyway) instead of ~20 maps
        return recompute_block(self._forward, self, finer, encoder_features[i], coarser, enabled=self.recompute)
