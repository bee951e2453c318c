"""LM-Net (Lu et al.), dimension-agnostic, following the official code (``core/LM_Net.py`` at 5b286d6).

Topology for S stages (paper: S = 5, widths 12/24/48/96/192):
- encoder: stage 0 = 2 multi-branch (MB) blocks on the input; stage i in 1..S-2 = strided conv (no norm, no
  activation) + 2 MB blocks; stage S-1 (bottleneck) = the strided conv only;
- GFT on all encoder maps -> bottleneck features; LFT on each encoder level 0..S-2;
- decoder level i: upsample (align_corners=True) + conv of level i+1, *added* to LFT_i, then 2 MB blocks;
- heads: 1x1 conv per decoder level (nnU-Net deep supervision; the official net has only the level-0 head).

Strides and kernels per stage come from nnU-Net's plans (anisotropic 3D included); widths and depth from the
preset. Every size divisible by the total stride works; no parameter depends on the patch size.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .heads import make_seg_layers, select_outputs
from .lmnet_transformers import GlobalFeatureTransformer, LocalFeatureTransformer, upsample_to
from .multibranch_block import MultiBranchBlock
from .ops import channels_last_in_inference, channels_last_on_cpu, conv_nd, same_padding
from .stage_geometry import resolve_stage_geometry

# Lean form (recompute=True): which blocks keep only their inputs and are recomputed in backward. Chosen from the
# forward time each block costs per MiB it would otherwise keep (CPU, 2D 256^2 and 3D 64^3 at nnU-Net's plans):
# multi-branch blocks ~1 ms/MiB (cheap to recompute, 10x their input kept) are recomputed at every level; an LFT
# costs ~3-4 ms/MiB (neighbourhood attention, dense 3x3 convs), so only the finest one, which keeps the most, is
# recomputed; a decoder merge keeps one upsampled map and is never recomputed.
RECOMPUTED_LFT_LEVELS = 1


def _mb_stage(cin: int, width: int, expand: int, kernel: Sequence[int], n_blocks: int, fuse_in_eval: bool,
              lean: bool):
    blocks = [MultiBranchBlock(cin if b == 0 else width, expand, width, kernel, fuse_in_eval=fuse_in_eval,
                               recompute=lean)
              for b in range(n_blocks)]
    return nn.Sequential(*blocks)


class LMNetDecoder(nn.Module):
    """Decoder levels S-2..0 plus the heads; holds the ``deep_supervision`` switch nnU-Net toggles."""

    def __init__(self, widths, kernels, num_classes, blocks_per_stage, expand_ratio, deep_supervision,
                 deep_supervision_heads, fuse_in_eval, lean):
        super().__init__()
        dim = len(kernels[0])
        n = len(widths)
        self.deep_supervision = deep_supervision
        # ModuleLists indexed by level 0..S-2 (level i upsamples from level i+1).
        self.up = nn.ModuleList(
            conv_nd(dim)(widths[i + 1], widths[i], kernels[i], padding=same_padding(kernels[i]), bias=True)
            for i in range(n - 1)
        )
        self.blocks = nn.ModuleList(
            _mb_stage(widths[i], widths[i], expand_ratio * widths[i], kernels[i], blocks_per_stage, fuse_in_eval, lean)
            for i in range(n - 1)
        )
        head_widths = widths[: n - 1] if deep_supervision_heads else widths[:1]
        self.seg_layers = make_seg_layers(dim, head_widths, num_classes)

    def forward(self, bottleneck: torch.Tensor, skips: Sequence[torch.Tensor]):
        x = bottleneck
        outputs = []
        for i in reversed(range(len(skips))):
            merged = channels_last_in_inference(self.up[i](upsample_to(x, skips[i].shape[2:])) + skips[i])
            x = self.blocks[i](merged)
            outputs.append(x)
        outputs.reverse()  # highest resolution first
        if not self.deep_supervision:
            outputs = outputs[:1]
        return select_outputs(outputs, self.seg_layers[: len(outputs)], self.deep_supervision)


class LMNet(nn.Module):
    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        *,
        features_per_stage: Sequence[int] = (12, 24, 48, 96, 192),
        strides: Sequence[Sequence[int]] | None = None,
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        spatial_dims: int | None = None,
        blocks_per_stage: int = 2,
        expand_ratio: int = 2,
        gft_heads: int = 12,
        lft_heads: int = 12,
        na_kernel: int = 3,
        na_rpb: bool = True,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        deep_supervision_heads: bool = True,
        fuse_in_eval: bool = True,
        recompute: bool = True,
    ):
        super().__init__()
        widths = [int(w) for w in features_per_stage]
        n = len(widths)
        if n < 2:
            raise ValueError("LM-Net needs at least 2 stages")
        dim, strides, kernels = resolve_stage_geometry(n, strides, kernel_sizes, spatial_dims)
        if deep_supervision and not deep_supervision_heads:
            raise ValueError("deep_supervision=True needs deep_supervision_heads=True (the per-level heads)")
        for i, w in enumerate(widths[:-1]):
            if w % lft_heads:
                raise ValueError(f"LM-Net: width {w} of stage {i} is not divisible by lft_heads={lft_heads}")
        self.spatial_dims = dim
        self.strides = strides
        conv = conv_nd(dim)

        self.encoder_stages = nn.ModuleList()
        for i in range(n - 1):
            cin = input_channels if i == 0 else widths[i]
            self.encoder_stages.append(
                _mb_stage(cin, widths[i], expand_ratio * widths[i], kernels[i], blocks_per_stage, fuse_in_eval,
                          recompute))
        # downsample[i - 1] takes level i-1 to level i (plain conv, as the official code: no norm, no activation)
        self.downsample = nn.ModuleList(
            conv(widths[i - 1], widths[i], kernels[i], stride=strides[i], padding=same_padding(kernels[i]), bias=True)
            for i in range(1, n)
        )
        pool_ratios = [[math.prod(s[a] for s in strides[i + 1:]) for a in range(dim)] for i in range(n - 1)]
        self.gft = GlobalFeatureTransformer(widths, kernels[-1], gft_heads, mlp_ratio, dropout, pool_ratios)
        self.lft = nn.ModuleList(
            LocalFeatureTransformer(
                widths, i, n - 1, kernels[i], strides[i],
                window=[na_kernel if k > 1 else 1 for k in kernels[i]],
                num_heads=lft_heads, rpb=na_rpb, mlp_ratio=mlp_ratio, dropout=dropout,
                recompute=recompute and i < RECOMPUTED_LFT_LEVELS)
            for i in range(n - 1)
        )
        self.decoder = LMNetDecoder(widths, kernels, num_classes, blocks_per_stage, expand_ratio, deep_supervision,
                                    deep_supervision_heads, fuse_in_eval, recompute)

    def forward(self, x: torch.Tensor):
        x = channels_last_on_cpu(x)
        features = []
        for i, stage in enumerate(self.encoder_stages):
            x = stage(x if i == 0 else channels_last_in_inference(self.downsample[i - 1](x)))
            features.append(x)
        features.append(self.downsample[-1](x))  # bottleneck: strided conv only
        # the GFT's pooling and tokens leave its output channels-first: back to channels-last, or the whole
        # decoder runs channels-first (3D: oneDNN then copies every depthwise conv's input to channels-last)
        bottleneck = channels_last_on_cpu(self.gft(features))
        skips = [lft(features) for lft in self.lft]
        return self.decoder(bottleneck, skips)

    @torch.no_grad()
    def reparameterize(self) -> "LMNet":
        """Fuse every multi-branch block for deployment (eval only; the state_dict layout changes)."""
        for m in self.modules():
            if isinstance(m, MultiBranchBlock):
                m.reparameterize()
        return self
