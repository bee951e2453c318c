"""Inference-only in-place element-wise steps.

Without autograd (nnU-Net's predictor and validation) an activation or a residual add can overwrite the fresh map
it reads instead of writing a new one: the same kernel on the same values, bit-identical, one full-size map fewer.
On CPU every new large tensor is page-faulted in on first write (glibc returns large freed blocks to the system),
which costs a measurable share of a forward (LGMSNet 2D 256^2: ~60 of ~330 ms at 1 thread).
Under autograd, torch.compile or torch.export the plain out-of-place ops are kept.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def no_autograd() -> bool:
    """True when nothing records this forward: in-place ops are safe and traced graphs are not involved."""
    return not (torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def activation_in_place(act: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """`act(y)` written into `y` for the activations LGMSNet and LM-Net use; other modules run as they are."""
    if isinstance(act, nn.ReLU):
        return torch.relu_(y)
    if isinstance(act, nn.SiLU):
        return F.silu(y, inplace=True)
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return torch.ops.aten.gelu_(y)
    return act(y)


def add_in_place(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """`fresh + other` written into `fresh` when that is the same result (same shape, and `fresh` already has the
    promoted dtype: under autocast a float16 map plus a float32 one is a float32 map, which an in-place add would
    round to float16). IEEE addition commutes, so the operand order does not matter."""
    if fresh.shape == other.shape and torch.promote_types(fresh.dtype, other.dtype) == fresh.dtype:
        return fresh.add_(other)
    return fresh + other
