"""ONNX Runtime's fused operators for an exported graph (``--target onnxruntime``, the default).

torch.onnx writes ``scaled_dot_product_attention`` as MatMul -> Softmax -> MatMul, which materialises the N x N
matrix: at LGMSNet's level-2 decoder GMS (4 sub-grids x 4 heads x 4096 tokens on a 512^2 patch) that is 1 GB of
logits per tile and most of the network's time in ONNX Runtime. onnxscript's ONNX Runtime rewriter
(``onnxscript.rewriter.ort_fusions.optimize_for_ort``, made for exactly this) replaces such patterns by ONNX
Runtime's contrib operators (com.microsoft domain): attention by MultiHeadAttention (run by ONNX Runtime's fused
CPU attention kernel, microsoft/onnxruntime#20805), LayerNorm after an add by SkipLayerNormalization, bias + GELU
by BiasGelu.
Measured (1 thread, LGMSNet 2D 512^2, one tile): 625 -> 517 ms per forward, the default network 1327 ms in torch.

Such a file runs in ONNX Runtime only; ``--target standard`` keeps standard ONNX operators for other runtimes.
The export's parity check runs on the final (fused) graph either way.
"""
from __future__ import annotations

TARGETS = ("onnxruntime", "standard")
DEFAULT_TARGET = TARGETS[0]
CONTRIB_DOMAIN = "com.microsoft"


def fuse_for_onnxruntime(model) -> dict[str, int]:
    """Rewrite `model` (an onnx_ir Model, in place) with ONNX Runtime's fused operators; the fusions applied."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    fused, counts = optimize_for_ort(model)
    if fused is not model:  # onnxscript 0.7 rewrites in place; a copy would leave the caller's model unfused
        raise RuntimeError("onnxscript's optimize_for_ort returned a new model instead of rewriting it in place")
    return {name: int(n) for name, n in counts.items() if n}


def contrib_operators(model_proto) -> list[str]:
    """The com.microsoft operators a serialized model uses, sorted (empty for a standard ONNX graph)."""
    return sorted({n.op_type for n in model_proto.graph.node if n.domain == CONTRIB_DOMAIN})
