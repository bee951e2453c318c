"""Pre-norm transformer layer and global multi-head self-attention (channels-last tokens).

Both LM-Net transformers (global GFT, local neighbourhood LFT) are one pre-norm layer:
``x = x + attn(LN(x)); x = x + MLP(LN(x))``, with an MLP of ratio 2, GELU and dropout 0.1, and no final norm.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskDropout(nn.Dropout):
    """nn.Dropout as an explicit mask multiply (same distribution and scaling).

    Under torch.compile (2.14) the traced strides of ``native_dropout_backward`` differ from the CPU/CUDA kernel's
    when the incoming gradient is non-contiguous (here: tokens transposed back to channels-first maps), and the
    following ``view`` in the linear layer's backward fails ("view size is not compatible"). A multiply's strides
    are traced exactly.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x).bernoulli_(1 - self.p)
        return x * keep.div_(1 - self.p)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = MaskDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            # tokens as one matrix: ONNX's Gemm adds the bias itself; a MatMul over (B, *S, C) is followed by a
            # broadcast Add over rows of C values, which ONNX Runtime ran at a few ns per element
            return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x.reshape(-1, x.shape[-1])))))).reshape(x.shape)
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class PreNormTransformerLayer(nn.Module):
    """One pre-norm layer around any attention module that maps (B, ..., C) to (B, ..., C)."""

    def __init__(self, dim: int, attention: nn.Module, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GlobalSelfAttention(nn.Module):
    """Multi-head self-attention over a token sequence (B, N, C) via scaled_dot_product_attention.

    SDPA's fused kernels keep the softmax stable under fp16 autocast and never materialise the N x N matrix.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"global attention: {dim} channels are not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        for lin in (self.qkv, self.proj):  # the official code's init for these two layers
            nn.init.trunc_normal_(lin.weight, std=0.02)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))
