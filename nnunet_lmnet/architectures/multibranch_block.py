"""LM-Net's multi-branch block with exact structural re-parameterization, for 2D and 3D.

Training form (official ``ReparamConv``): 1x1 expand + BN + Hardswish, then parallel depthwise convs each followed
by its own BN, summed, GELU, squeeze-excitation, 1x1 pointwise, plus a 1x1 conv shortcut.

Depthwise branches, derived from the level's nnU-Net kernel K (3 or 1 per axis):
- ``large``: 5 where K is 3, 1 where K is 1;
- ``square``: K itself;
- ``axial<a>``: one 1-D kernel of 3 along each axis a where K is 3.
In 2D with K = 3x3 this is exactly the official set 5x5, 3x3, 3x1, 1x3; in 3D it is 5^3, 3^3, 3x1x1, 1x3x1, 1x1x3;
an anisotropic level (K = 1x3x3) gets 1x5x5, 1x3x3, 1x3x1, 1x1x3 and nothing smears across the coarse axis.

Every branch is centred (padding k // 2 per axis), so BN-folded kernels embed into the ``large`` kernel exactly.
Three forms share one state_dict layout except the last:
- train mode: the branches as written;
- eval mode (default ``fuse_in_eval=True``): one depthwise conv with the fused kernel, computed from the current
  weights and BN running statistics at every call. This is what nnU-Net's validation and predictor run, with
  checkpoints untouched (the fusion is a few hundred multiply-adds per channel, negligible next to the conv);
- ``reparameterize()``: permanently replace the branches with the fused conv (deployment, parameter counts).
BN is read through its running statistics, so SyncBatchNorm (DDP) folds the same way.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .depthwise import depthwise_conv, depthwise_conv_nd
from .ops import batch_norm_nd, conv_nd, fold_bn, same_padding
from .pointwise import pointwise_conv_nd, pointwise_conv_with
from .recompute import recompute as recompute_block
from .squeeze_excitation import SqueezeExcitation


def branch_kernels(kernel_size: Sequence[int], large: int = 5) -> dict[str, tuple[int, ...]]:
    """Name -> depthwise kernel of each branch for a level whose nnU-Net kernel is `kernel_size`."""
    k = tuple(int(v) for v in kernel_size)
    if any(v not in (1, 3) for v in k):
        raise ValueError(f"multi-branch block: kernel sizes must be 1 or 3 per axis, got {list(k)}")
    kernels = {"large": tuple(large if v == 3 else 1 for v in k), "square": k}
    for axis, v in enumerate(k):
        if v == 3:
            kernels[f"axial{axis}"] = tuple(3 if a == axis else 1 for a in range(len(k)))
    return kernels


def embed_centred(kernel: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad a (C, 1, *k) kernel symmetrically to (C, 1, *size)."""
    pad = []
    for k, s in zip(reversed(kernel.shape[2:]), reversed(tuple(size))):
        p = (s - k) // 2
        pad += [p, p]
    return F.pad(kernel, pad)


class DepthwiseBranch(nn.Module):
    """Depthwise conv (no bias) + BN."""

    def __init__(self, channels: int, kernel: tuple[int, ...]):
        super().__init__()
        dim = len(kernel)
        self.conv = depthwise_conv_nd(channels, kernel, bias=False)
        self.bn = batch_norm_nd(dim)(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class MultiBranchBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        expand_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        large_kernel: int = 5,
        fuse_in_eval: bool = True,
        recompute: bool = True,
    ):
        super().__init__()
        dim = len(kernel_size)
        self.dim = dim
        self.fuse_in_eval = fuse_in_eval
        self.recompute = recompute  # keep only the block input for backward (see architectures.recompute)
        self.expand = nn.Sequential(
            pointwise_conv_nd(dim, in_channels, expand_channels), batch_norm_nd(dim)(expand_channels), nn.Hardswish()
        )
        kernels = branch_kernels(kernel_size, large_kernel)
        self.fused_kernel_size = kernels["large"]
        self.branches = nn.ModuleDict({name: DepthwiseBranch(expand_channels, k) for name, k in kernels.items()})
        self.fused: nn.Module | None = None  # set by reparameterize()
        self.se = SqueezeExcitation(expand_channels, dim)
        self.pointwise = pointwise_conv_nd(dim, expand_channels, out_channels)
        self.shortcut = pointwise_conv_nd(dim, in_channels, out_channels)

    def fused_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single depthwise kernel and bias equal (in eval mode) to the sum of all branches."""
        kernel, bias = 0, 0
        for branch in self.branches.values():
            k, b = fold_bn(branch.conv.weight, branch.bn)
            kernel = kernel + embed_centred(k, self.fused_kernel_size)
            bias = bias + b
        return kernel, bias

    def _expand_conv_bn(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 expand conv and its BN; in eval mode (fused forms) as one conv with the BN folded in: one pass
        over the widest map fewer, the same affine map."""
        conv, bn, _ = self.expand
        if self.training or not (self.fuse_in_eval or self.fused is not None):
            return bn(conv(x))
        weight, bias = fold_bn(conv.weight, bn, conv.bias)
        return pointwise_conv_with(x, weight.to(x.dtype), bias.to(x.dtype))

    def _depthwise(self, t: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            if torch.compiler.is_exporting():  # depthwise_conv's export form (3D: as 2D convs)
                return depthwise_conv(t, self.fused.weight, self.fused.bias, self.fused.padding)
            return self.fused(t)
        if not self.training and self.fuse_in_eval:
            kernel, bias = self.fused_weights()
            return depthwise_conv(t, kernel.to(t.dtype), bias.to(t.dtype), same_padding(self.fused_kernel_size))
        return self._branch_sum(t)

    def _branch_sum(self, t: torch.Tensor) -> torch.Tensor:
        # The branches' BN outputs are summed into the first one in place: sum() would write four new maps
        # (0 + b0, then one per add), each a fresh allocation the CPU page-faults in. Nothing saves a BN output
        # for backward, so autograd allows it; same additions in the same order, bit-identical.
        branches = iter(self.branches.values())
        total = next(branches)(t)
        for branch in branches:
            total.add_(branch(t))
        return total

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            return self._forward_in_place(x)
        t = self._depthwise(self.expand[2](self._expand_conv_bn(x)))
        return self.pointwise(self.se(F.gelu(t))) + self.shortcut(x)

    def _forward_in_place(self, x: torch.Tensor) -> torch.Tensor:
        # Inference (no autograd): each element-wise step overwrites the fresh map it reads instead of writing a
        # new one. Same ops in the same order, bit-identical; four full-size maps fewer per block (each one the
        # CPU page-faults in). The input x is only read: the shortcut needs it last.
        t = self._depthwise(F.hardswish(self._expand_conv_bn(x), inplace=True))
        t = torch.ops.aten.gelu_(t)
        t = t.mul_(self.se.gate(t))
        return self.pointwise(t).add_(self.shortcut(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return recompute_block(self._forward, self, x, enabled=self.recompute)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one fused depthwise conv (irreversible; uses BN running statistics)."""
        if self.fused is not None:
            return
        kernel, bias = self.fused_weights()
        channels = kernel.shape[0]
        # in the weights' dtype and device: a float64 or half model must stay one
        fused = conv_nd(self.dim)(channels, channels, self.fused_kernel_size,
                                  padding=same_padding(self.fused_kernel_size), groups=channels, bias=True,
                                  device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        self.fused = fused
        del self.branches
