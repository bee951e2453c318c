"""LGMSNet (ECAI 2025, "Thinning a medical image segmentation model via dual-level multiscale fusion"), 2D and 3D.

Written from the project's spec (shared/specs/lgmsnet.md), which was measured on the official code
(github.com/cq-dong/LGMSNet @ 4089497). With the defaults and ``deep_supervision_heads=False`` the network has
the official parameter counts (2D, 3 in / 2 classes: 2,321,410; 3D, 1 in / 14 classes: 6,193,742) and the same
computation on inputs divisible by 32.

Topology for level l of n (paper: n = 5, widths 16/32/64/128/128):
- stem: 3x3 conv (bias) -> norm -> ReLU at width features[0];
- encoder: level l > 0 starts with MaxPool(kernel = stride = strides[l]); levels 0-2 are an LMS block at the
  previous width + 1x1 widening projection, levels >= 3 a GMS block;
- decoder level l (n-2 ... 0): interpolate to the skip's size + 3x3 conv -> concat(skip, up) -> GMS (l >= 3),
  fusion conv + GMS (l == 2) or fusion conv (l < 2);
- 1x1 seg heads on the decoder levels (``decoder.seg_layers``, index 0 = full resolution, the upstream head).

Deviations from the official code, each needed by nnU-Net or harmless for the paper configuration:
- Strides and depth come from the plans: MaxPool uses the plan's (possibly anisotropic) stride and the upsampling
  interpolates to the skip's exact size (identical to upstream's x2 where the stride is 2). Any n_stages >= 2.
- Anisotropic kernels: where the plan's kernel for a level is 1 on an axis, every conv and depthwise kernel of that
  level is 1 on that axis (LMS (1,3,3)...(1,9,9), 3x3 convs (1,3,3)). Isotropic plans are exactly upstream.
- GMS sparse unfold: the patch is 2 per axis where the feature map is even and 1 where it is odd, chosen at run
  time (upstream always uses 2 and crashes on odd maps, e.g. 48x192x192). No weight depends on it.
- Deep supervision: upstream has none. With ``deep_supervision_heads=True`` (nnU-Net) there is one extra 1x1 head
  per decoder level 1..n-2; ``False`` builds only the upstream head (exact parameter count, DS unavailable).
- Attention uses ``F.scaled_dot_product_attention`` (same maths, default scale head_dim^-0.5; fused kernels keep
  the softmax in fp32 under autocast and do not materialise the N x N matrix). No einops.
- ``norm`` can replace the norm of the conv units (see ``LGMSNet``); GroupNorm in LMS, BatchNorm in the GMS
  depthwise branch and LayerNorm in the transformer always follow upstream.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn

from .gms_block import GMSBlock
from .heads import make_seg_layers, select_outputs
from .lgms_layers import NORMS, ConvNormAct, FusionConv, UpConv, default_norm
from .lms_block import LMSBlock
from .ops import as_tuple, max_pool_nd
from .recompute import recompute as recompute_block

FIRST_GMS_LEVEL = 3  # encoder levels < 3 are LMS, >= 3 GMS; decoder levels >= 3 GMS, 2 fusion + GMS, < 2 fusion
FUSION_GMS_LEVEL = 2
# Lean form (recompute=True): the stem and the encoder and decoder stages of the levels below this one keep only
# their inputs and are recomputed in backward; deeper stages keep their activations. Measured per stage (CPU, 2D
# 256^2 and 3D 64^3 at nnU-Net's plans), a deep stage costs 2-6 ms of forward per MiB it keeps (GMS attention,
# dense convs on many channels), the full-resolution ones 1-2.5 ms/MiB while holding most of the memory.
RECOMPUTED_LEVELS = 2


class DecoderStage(nn.Module):
    """Upsample the deeper map to the skip's size, concatenate (skip first) and fuse."""

    def __init__(self, up: UpConv, block: nn.Module):
        super().__init__()
        self.up = up
        self.block = block

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.up(x, skip.shape[2:])], dim=1))


class LGMSDecoder(nn.Module):
    """Decoder stages indexed by level (0 = full resolution) plus the seg heads.

    nnU-Net toggles ``deep_supervision``; switching it on without the extra heads raises at once.
    """

    def __init__(self, stages: nn.ModuleList, seg_layers: nn.ModuleList, deep_supervision: bool,
                 recompute: bool = True):
        super().__init__()
        self.stages = stages
        self.seg_layers = seg_layers
        self.deep_supervision = deep_supervision
        self.recompute = recompute

    @property
    def deep_supervision(self) -> bool:
        return self._deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        if enabled and len(self.seg_layers) < len(self.stages):
            raise ValueError(
                "deep supervision needs a head per decoder level, but this LGMSNet was built with "
                "deep_supervision_heads=False (the paper preset); build it with deep_supervision_heads=True"
            )
        self._deep_supervision = bool(enabled)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        features: list[torch.Tensor] = [x] * len(self.stages)
        for level in reversed(range(len(self.stages))):
            stage = self.stages[level]
            x = recompute_block(stage, stage, x, skips[level], enabled=self.recompute and level < RECOMPUTED_LEVELS)
            features[level] = x
        return select_outputs(features[: len(self.seg_layers)], self.seg_layers, self.deep_supervision)


class LGMSNet(nn.Module):
    """LGMSNet, 2D or 3D.

    Args:
        input_channels, num_classes: input modalities and output logits channels (no final activation).
        deep_supervision: return a list of n-1 logits (full resolution first) instead of one tensor.
        features_per_stage: width per resolution level (n_stages = its length, >= 2).
        strides: per level and axis; strides[0] must be all 1. None: [1]*d, then [2]*d.
        kernel_sizes: per level and axis, 3 or 1; a 1 makes that level flat on that axis. None: all 3.
        spatial_dims: 2 or 3, used when neither strides nor kernel_sizes say it (default 2).
        gms_split_ratio: transformer : conv channels in every GMS block (upstream 3 : 1).
        attention_heads, head_dim: attention shape, independent of the width (upstream 4 x 8).
        mlp_ratio: transformer MLP width = mlp_ratio x the GMS block's output width.
        transformer_depth: transformer layers per GMS block (upstream 1).
        deep_supervision_heads: build the 1x1 heads of levels 1..n-2 (False = upstream parameter count).
        norm: None (upstream: 'batch' in 2D, 'instance' = InstanceNorm affine=False in 3D), 'batch', 'instance'
            or 'instance_affine'. Applies to the stem, projections, LMS reduce/expand, GMS conv1-4, up-convs
            and fusion convs.
    All arguments are JSON-serialisable so nnU-Net plans can store and rebuild them.
    """

    # The sparse transformer picks its patch from the parity of each map (2 on even axes, 1 on odd ones), so one
    # traced graph (torch.export / ONNX) holds for one parity only: an export with dynamic sizes takes multiples
    # of this factor x the total stride, which keep every level's map even (nnunet_lmnet.export.onnx_export).
    export_size_factor = 2

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        *,
        features_per_stage: Sequence[int] = (16, 32, 64, 128, 128),
        strides: Sequence[Sequence[int]] | None = None,
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        spatial_dims: int | None = None,
        gms_split_ratio: Sequence[int] = (3, 1),
        attention_heads: int = 4,
        head_dim: int = 8,
        mlp_ratio: int = 2,
        transformer_depth: int = 1,
        deep_supervision_heads: bool = True,
        norm: str | None = None,
        recompute: bool = True,
    ):
        super().__init__()
        widths = [int(w) for w in features_per_stage]
        n = len(widths)
        if n < 2 or min(widths) <= 0:
            raise ValueError(f"features_per_stage needs >= 2 positive widths, got {list(features_per_stage)}")
        dim, strides, kernel_sizes = _geometry(n, strides, kernel_sizes, spatial_dims)
        norm = default_norm(dim) if norm is None else norm
        if norm not in NORMS:
            raise ValueError(f"norm must be None or one of {NORMS}, got {norm!r}")
        if deep_supervision and not deep_supervision_heads:
            raise ValueError("deep_supervision=True needs deep_supervision_heads=True")
        ratio = tuple(int(r) for r in gms_split_ratio)
        if len(ratio) != 2 or min(ratio) <= 0:
            raise ValueError(f"gms_split_ratio must be two positive ints (transformer, conv), got {gms_split_ratio}")
        self.spatial_dims = dim
        self.strides = strides
        axes = [tuple(k != 1 for k in ks) for ks in kernel_sizes]

        def gms(c_in: int, c_out: int, level: int) -> GMSBlock:
            if (c_out * ratio[0]) % sum(ratio):
                raise ValueError(f"GMS width {c_out} (level {level}) cannot be split {ratio[0]}:{ratio[1]}")
            t = c_out * ratio[0] // sum(ratio)
            return GMSBlock(
                c_in, c_out, dim, split=(t, c_out - t), conv_axes=axes[level], norm=norm, heads=attention_heads,
                head_dim=head_dim, mlp_dim=mlp_ratio * c_out, depth=transformer_depth,
            )

        self.stem = ConvNormAct(dim, input_channels, widths[0], 3, conv_axes=axes[0], norm=norm, act=nn.ReLU, bias=True)
        self.encoder = nn.ModuleList()
        for level in range(n):
            c_in = widths[max(level - 1, 0)]
            if level < FIRST_GMS_LEVEL:
                # LMS keeps the previous width; only the 1x1 projection widens (tiny bottleneck, as upstream).
                block = nn.Sequential(OrderedDict(
                    lms=LMSBlock(c_in, dim, conv_axes=axes[level], norm=norm),
                    proj=ConvNormAct(dim, c_in, widths[level], 1, norm=norm),
                ))
            else:
                block = gms(c_in, widths[level], level)
            pool = max_pool_nd(dim)(strides[level], strides[level]) if max(strides[level]) > 1 else nn.Identity()
            self.encoder.append(nn.Sequential(OrderedDict(pool=pool, block=block)))

        stages = nn.ModuleList()
        for level in range(n - 1):
            w = widths[level]
            if level >= FIRST_GMS_LEVEL:
                block = gms(2 * w, w, level)
            else:
                block = FusionConv(dim, 2 * w, w, conv_axes=axes[level], norm=norm)
                if level == FUSION_GMS_LEVEL:
                    block = nn.Sequential(OrderedDict(fusion=block, gms=gms(w, w, level)))
            up = UpConv(dim, widths[level + 1], w, conv_axes=axes[level], norm=norm)
            stages.append(DecoderStage(up, block))
        head_widths = widths[: n - 1] if deep_supervision_heads else widths[:1]
        self.recompute = recompute
        self.decoder = LGMSDecoder(stages, make_seg_layers(dim, head_widths, num_classes), deep_supervision,
                                   recompute)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        lean = self.recompute
        # No channels-last here (unlike LM-Net): measured on CPU it is neutral in 3D and ~10% slower in 2D
        # (GroupNorm and the transformer's unfold copies). Only the decoder's up-convs use it in eval (UpConv).
        x = recompute_block(self.stem, self.stem, x, enabled=lean)
        skips = []
        for level, stage in enumerate(self.encoder):  # pool + block: the pool's indices are recomputed too
            x = recompute_block(stage, stage, x, enabled=lean and level < RECOMPUTED_LEVELS)
            skips.append(x)
        return self.decoder(skips)


def _geometry(n: int, strides, kernel_sizes, spatial_dims):
    """Spatial dims, per-level strides and kernel sizes (tuples), validated."""
    dims = {len(v[0]) for v in (strides, kernel_sizes) if v is not None and len(v) and not isinstance(v[0], int)}
    if spatial_dims is not None:
        dims.add(int(spatial_dims))
    if len(dims) > 1:
        raise ValueError(f"strides, kernel_sizes and spatial_dims disagree on the number of spatial dims: {dims}")
    dim = dims.pop() if dims else 2
    if dim not in (2, 3):
        raise ValueError(f"LGMSNet is 2D or 3D, got {dim} spatial dims")
    strides = [[1] * dim] + [[2] * dim] * (n - 1) if strides is None else strides
    kernel_sizes = [[3] * dim] * n if kernel_sizes is None else kernel_sizes
    if len(strides) != n or len(kernel_sizes) != n:
        raise ValueError(
            f"{n} stages (features_per_stage) but {len(strides)} strides and {len(kernel_sizes)} kernel_sizes"
        )
    strides = tuple(as_tuple(s, dim) for s in strides)
    kernel_sizes = tuple(as_tuple(k, dim) for k in kernel_sizes)
    if any(s != 1 for s in strides[0]):
        raise ValueError(f"strides[0] must be all 1 (the stem does not downsample), got {list(strides[0])}")
    if any(s < 1 for st in strides for s in st):
        raise ValueError(f"strides must be >= 1, got {[list(s) for s in strides]}")
    if any(k not in (1, 3) for ks in kernel_sizes for k in ks):
        raise ValueError(
            "kernel_sizes entries must be 3 or 1 (LGMSNet has its own kernels; a 1 only marks a flat axis), "
            f"got {[list(k) for k in kernel_sizes]}"
        )
    return dim, strides, kernel_sizes
