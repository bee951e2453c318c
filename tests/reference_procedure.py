"""What the seeded reference files pin, in one place: the cases, the procedure run on a network, the file layout.

Shared by ``tests/reference/make_reference.py`` (runs the procedure on a frozen copy of the networks and stores the
results) and ``tests/test_reference_outputs.py`` (runs it on the current package and compares), so both sides do
exactly the same steps in the same order.

File layout: a few flat tensors instead of one tensor per state entry. torch.save spends ~300 bytes per stored
tensor, which for ~800 state entries would be most of the file. ``layout`` (zlib-compressed JSON) lists every
state_dict entry as [name, shape, "p" parameter / "b" buffer, "f" float / "i" integer]; the flat tensors follow
that order.
"""
from __future__ import annotations

import json
import math
import zlib

import torch
import torch.nn as nn

FORMAT_VERSION = 1

# Small versions of the presets with the same structural rules: LM-Net >= 4 stages (5 = preset in 2D), widths
# divisible by lft_heads; LGMSNet 5 stages so levels 3-4 are GMS blocks, widths divisible by 4 (LMS groups and
# the 3:1 GMS split). Widths are small so the files stay small, but >= 4 wherever a LayerNorm or InstanceNorm
# normalises over them (over 2-3 values, near-equal values make the gradients ill-conditioned and float64
# rounding-order noise would approach the 1e-10 tolerance); for the same reason LGMSNet's 3D maps (InstanceNorm)
# keep >= 4 voxels.
# Inputs are non-square where the strides allow (a swapped axis shows) and divisible by the total stride.
CASES: dict[str, dict] = {
    "lmnet_2d": dict(
        network="lmnet",
        kwargs=dict(input_channels=1, num_classes=2, deep_supervision=True, features_per_stage=[4, 4, 4, 8, 8],
                    strides=[[1, 1]] + [[2, 2]] * 4, kernel_sizes=[[3, 3]] * 5, gft_heads=4, lft_heads=4),
        input_shape=(2, 1, 16, 48),  # head_dim 1 on levels 0-2 (as the preset's level 0), 2 on level 3
    ),
    "lmnet_3d_iso": dict(
        network="lmnet",
        kwargs=dict(input_channels=1, num_classes=2, deep_supervision=True, features_per_stage=[4, 4, 4, 8],
                    strides=[[1, 1, 1]] + [[2, 2, 2]] * 3, kernel_sizes=[[3, 3, 3]] * 4, gft_heads=4, lft_heads=2),
        input_shape=(2, 1, 8, 8, 8),
    ),
    "lmnet_3d_aniso": dict(
        network="lmnet",
        kwargs=dict(input_channels=1, num_classes=2, deep_supervision=True, features_per_stage=[4, 4, 4, 8],
                    strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]], gft_heads=4, lft_heads=2),
        input_shape=(2, 1, 4, 8, 16),
    ),
    "lgmsnet_2d": dict(
        network="lgmsnet",
        kwargs=dict(input_channels=1, num_classes=2, deep_supervision=True, features_per_stage=[4, 4, 8, 8, 8],
                    strides=[[1, 1]] + [[2, 2]] * 4, kernel_sizes=[[3, 3]] * 5, attention_heads=2, head_dim=4),
        input_shape=(2, 1, 16, 48),  # level 4 is 1 x 3: the odd-axis sparse patch (1 instead of 2) runs too
    ),
    "lgmsnet_3d_iso": dict(
        network="lgmsnet",
        # axes stop pooling once short, as in nnU-Net plans of an elongated patch; the bottleneck keeps 8 voxels
        kwargs=dict(input_channels=1, num_classes=2, deep_supervision=True, features_per_stage=[4, 4, 4, 8, 8],
                    strides=[[1, 1, 1], [2, 2, 2], [1, 2, 2], [1, 1, 2], [1, 1, 2]], kernel_sizes=[[3, 3, 3]] * 5,
                    attention_heads=2, head_dim=4),
        input_shape=(2, 1, 4, 8, 32),
    ),
    "lgmsnet_3d_aniso": dict(
        network="lgmsnet",
        # flat first axis up to level 3, so LMS and GMS blocks both run on a (1, 3, 3) level
        kwargs=dict(input_channels=1, num_classes=2, deep_supervision=True, features_per_stage=[4, 4, 4, 8, 8],
                    strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2]],
                    kernel_sizes=[[1, 3, 3]] * 4 + [[3, 3, 3]], attention_heads=2, head_dim=4),
        input_shape=(2, 1, 2, 16, 32),
    ),
}

TRAIN_SEED = 20240607  # torch.manual_seed right before the train forward: fixes LM-Net's dropout masks
FULL_GRAD_MAX_NUMEL = 8  # gradients up to this size are stored whole, larger ones as a summary
GRAD_SAMPLES = 4


def fixed_weights(numel: int, salt: int) -> torch.Tensor:
    """Deterministic, irregular float64 weights without any RNG (the same on every machine and torch version)."""
    i = torch.arange(numel, dtype=torch.float64)
    return torch.sin(i * 0.7548776662466927 + 0.5698402909980532 * (salt + 1)) * (1.0 + 0.5 * torch.cos(i * 0.381966))


def grad_record(g: torch.Tensor) -> torch.Tensor:
    """A small gradient whole; a larger one as [norm, fixed weighted sum, GRAD_SAMPLES evenly spaced entries].

    The norm and the weighted sum depend on every entry, so a change anywhere in the gradient shows in them.
    """
    g = g.detach()
    if g.numel() <= FULL_GRAD_MAX_NUMEL:
        return g.clone()
    flat = g.flatten()
    idx = torch.linspace(0, flat.numel() - 1, GRAD_SAMPLES).round().long()
    wsum = (flat * fixed_weights(flat.numel(), salt=flat.numel())).sum()
    return torch.cat([flat.norm().reshape(1), wsum.reshape(1), flat[idx]])


def _record_numel(numel: int) -> int:
    return numel if numel <= FULL_GRAD_MAX_NUMEL else 2 + GRAD_SAMPLES


def run(net: nn.Module, x: torch.Tensor) -> dict:
    """The pinned procedure. `net` is float64 with the case's state loaded; it is left in train mode.

    Returns eval_output, train_outputs (list), input_grad, param_grads ({name: grad_record}) and the buffers
    ({name: tensor}) after the train forward and after the backward.
    """
    out: dict = {}
    # (a) eval, deep supervision off (LM-Net runs its fused multi-branch form here)
    net.eval()
    net.decoder.deep_supervision = False
    with torch.no_grad():
        out["eval_output"] = net(x.clone())
    # (b) train, deep supervision on, seeded right before the forward
    net.train()
    net.decoder.deep_supervision = True
    x = x.clone().requires_grad_(True)
    torch.manual_seed(TRAIN_SEED)
    train_outputs = net(x)
    out["train_outputs"] = [t.detach().clone() for t in train_outputs]
    # (d) running statistics after that one forward, and again after the backward (which must not touch them)
    out["buffers_after_forward"] = {n: b.detach().clone() for n, b in net.named_buffers()}
    # (c) gradients of a fixed scalar loss of all train outputs. A mean per output, as a segmentation loss: keeps
    # the gradients O(1), so float64 rounding noise (relative ~1e-14) stays far below the 1e-10 absolute tolerance
    loss = sum((t * fixed_weights(t.numel(), salt=k).reshape(t.shape)).mean() for k, t in enumerate(train_outputs))
    loss.backward()
    out["input_grad"] = x.grad.detach().clone()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    if missing:
        raise AssertionError(f"parameters without a gradient: {missing}")
    out["param_grads"] = {name: grad_record(p.grad) for name, p in net.named_parameters()}
    out["buffers_after_backward"] = {n: b.detach().clone() for n, b in net.named_buffers()}
    return out


# ---- packing into / out of the file --------------------------------------------------------------------------

def _flat(tensors, dtype) -> torch.Tensor:
    tensors = list(tensors)
    return torch.cat([t.reshape(-1).to(dtype) for t in tensors]) if tensors else torch.zeros(0, dtype=dtype)


def _split(flat: torch.Tensor, sizes, shapes=None) -> list[torch.Tensor]:
    sizes = list(sizes)
    if flat.numel() != sum(sizes):
        raise ValueError(f"packed tensor has {flat.numel()} values, the layout says {sum(sizes)}")
    parts = torch.split(flat, sizes)
    return [p.reshape(s) for p, s in zip(parts, shapes, strict=True)] if shapes is not None else list(parts)


def pack(state: dict[str, torch.Tensor], parameter_names: set[str], result: dict) -> dict:
    """The file's tensor fields for one case (state, run results)."""
    layout = [[n, list(t.shape), "p" if n in parameter_names else "b", "f" if t.is_floating_point() else "i"]
              for n, t in state.items()]
    floats = [e for e in layout if e[3] == "f"]
    ints = [e for e in layout if e[3] == "i"]
    params = [e[0] for e in layout if e[2] == "p"]
    buffers = result["buffers_after_forward"]
    after = result["buffers_after_backward"]
    if after.keys() != buffers.keys() or not all(torch.equal(b, after[n]) for n, b in buffers.items()):
        raise AssertionError("the reference changed a buffer in backward")
    bfloat = [e[0] for e in layout if e[2] == "b" and e[3] == "f"]
    bint = [e[0] for e in layout if e[2] == "b" and e[3] == "i"]
    assert set(buffers) == set(bfloat) | set(bint)
    return {
        "layout": zlib.compress(json.dumps(layout).encode()),
        "state_float16": _flat((state[e[0]] for e in floats), torch.float64).half(),  # exact (randomized_state)
        "state_int64": _flat((state[e[0]] for e in ints), torch.int64),
        "eval_output": result["eval_output"],
        "train_outputs": result["train_outputs"],
        "input_grad": result["input_grad"],
        "param_grads": _flat((result["param_grads"][n] for n in params), torch.float64),
        "buffers_float": _flat((buffers[n] for n in bfloat), torch.float64),
        "buffers_int": _flat((buffers[n] for n in bint), torch.int64),
    }


def layout_of(record: dict) -> list[list]:
    return json.loads(zlib.decompress(record["layout"]).decode())


def unpack_state(record: dict) -> dict[str, torch.Tensor]:
    """The stored state_dict, float entries as float64."""
    layout = layout_of(record)
    out = {}
    for kind, flat, dtype in (("f", record["state_float16"], torch.float64), ("i", record["state_int64"], None)):
        entries = [e for e in layout if e[3] == kind]
        parts = _split(flat, (math.prod(e[1]) for e in entries), [e[1] for e in entries])
        out.update({e[0]: (p.to(dtype) if dtype else p) for e, p in zip(entries, parts, strict=True)})
    return {e[0]: out[e[0]] for e in layout}  # layout order


def unpack_param_grads(record: dict) -> dict[str, torch.Tensor]:
    """{parameter name: expected grad_record} (whole gradients keep the parameter's shape)."""
    params = [e for e in layout_of(record) if e[2] == "p"]
    parts = _split(record["param_grads"], (_record_numel(math.prod(e[1])) for e in params))
    return {e[0]: (p.reshape(e[1]) if math.prod(e[1]) <= FULL_GRAD_MAX_NUMEL else p)
            for e, p in zip(params, parts, strict=True)}


def unpack_buffers(record: dict) -> dict[str, torch.Tensor]:
    """{buffer name: expected value after the train forward}."""
    layout = layout_of(record)
    out = {}
    for kind, flat in (("f", record["buffers_float"]), ("i", record["buffers_int"])):
        entries = [e for e in layout if e[2] == "b" and e[3] == kind]
        parts = _split(flat, (math.prod(e[1]) for e in entries), [e[1] for e in entries])
        out.update({e[0]: p for e, p in zip(entries, parts, strict=True)})
    return {e[0]: out[e[0]] for e in layout if e[2] == "b"}
