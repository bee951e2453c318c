"""``nnunet-lmnet info``: parameters, MACs and output shape of a paper preset.

MACs are counted for one forward pass (batch 1, eval mode) with torch's FlopCounterMode (convolutions, linear
layers and matrix products, including the global attention's QK^T and AV through SDPA) plus, analytically, the
neighbourhood attention's QK^T and AV (2 x positions x window x channels per layer), which runs as element-wise
products the counter does not see. Norms, activations, softmax and interpolation are not counted.
"""
from __future__ import annotations

import json
import math

from .errors import UserError

ATTENTION_NOTE = ("MACs: conv/linear/matmul via torch FlopCounterMode (global attention QK^T and AV included) + "
                  "neighbourhood attention QK^T and AV counted analytically; norms/activations/softmax not counted")


def paper_network(arch: str, dim: int, in_channels: int, classes: int):
    """The paper preset as the official code builds it (no deep-supervision heads), isotropic strides."""
    from nnunet_lmnet.plans.presets import preset

    import pydoc

    p = preset(arch)
    cls = pydoc.locate(p["network_class_name"])
    kwargs = dict(p["arch_kwargs"], spatial_dims=dim, deep_supervision_heads=False)
    return cls(input_channels=in_channels, num_classes=classes, deep_supervision=False, **kwargs)


def count_macs(network, input_shape) -> int:
    """MACs of one forward pass (batch as in `input_shape`, eval mode), attention included (see module doc)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nnunet_lmnet.architectures.neighborhood_attention import NeighborhoodAttention
    from nnunet_lmnet.benchmarking.complexity import count_macs as counter_macs

    na_modules = {name: m for name, m in network.named_modules() if isinstance(m, NeighborhoodAttention)}
    analytic = 0

    def hook(module, args, output):
        nonlocal analytic
        x = args[0]  # channels-last (B, *spatial, C): QK^T and AV, one MAC per position, neighbour and channel
        analytic += 2 * x.shape[0] * math.prod(x.shape[1:-1]) * math.prod(module.kernel_size) * x.shape[-1]

    handles = [m.register_forward_hook(hook) for m in na_modules.values()]
    try:
        total = counter_macs(network, input_shape)
        # The counter also sees the small products that add the relative position bias inside the attention;
        # take everything it attributes to an attention module except its qkv/proj layers back out.
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network.eval()(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(network).__name__  # the counter names modules '<RootClass>.<path>'
    inside = sum(per_module.get(f"{root}.{n}", 0) - per_module.get(f"{root}.{n}.qkv", 0)
                 - per_module.get(f"{root}.{n}.proj", 0) for n in na_modules)
    return total - inside // 2 + analytic // 2


def _set_fuse_in_eval(net, value: bool) -> None:
    for m in net.modules():
        if hasattr(m, "fuse_in_eval"):
            m.fuse_in_eval = value


def describe(arch: str, dim: int, in_channels: int, classes: int, patch: list[int]) -> dict:
    import torch

    from nnunet_lmnet.architectures.stage_geometry import total_stride

    if len(patch) != dim:
        raise UserError(f"--patch needs {dim} sizes for --dim {dim}, got {patch}")
    torch.manual_seed(0)
    net = paper_network(arch, dim, in_channels, classes).eval()
    divisor = total_stride(net.strides)
    if any(p % s for p, s in zip(patch, divisor)):
        raise UserError(f"--patch {patch} is not divisible by the network's total stride {list(divisor)} per axis")
    shape = (1, in_channels, *patch)
    params = sum(p.numel() for p in net.parameters())
    _set_fuse_in_eval(net, False)  # count the training form's branches, not the fused eval path
    macs = count_macs(net, shape)
    _set_fuse_in_eval(net, True)
    with torch.no_grad():
        out_shape = list(net(torch.zeros(shape)).shape)
    if hasattr(net, "reparameterize"):
        net.reparameterize()
    params_deploy = sum(p.numel() for p in net.parameters())
    macs_deploy = count_macs(net, shape)
    return {"arch": arch, "dim": dim, "params": params, "params_deploy": params_deploy, "macs": macs,
            "macs_deploy": macs_deploy, "output_shape": out_shape}


def _info(args) -> int:
    from nnunet_lmnet.plans.presets import DISPLAY_NAMES

    r = describe(args.arch, args.dim, args.in_channels, args.classes, args.patch)
    print(f"{DISPLAY_NAMES[args.arch]} paper preset, {args.dim}D, {args.in_channels} input channels, "
          f"{args.classes} classes, patch {'x'.join(map(str, args.patch))}")
    print(f"  parameters (training form):        {r['params']:,}")
    print(f"  parameters (re-parameterized):     {r['params_deploy']:,}")
    print(f"  MACs per sample (training form):   {r['macs'] / 1e9:.3f} G")
    print(f"  MACs per sample (re-parameterized): {r['macs_deploy'] / 1e9:.3f} G")
    print(f"  output shape:                      {r['output_shape']}")
    print(f"  ({ATTENTION_NOTE}; FLOPs = 2 x MACs)")
    if args.json:
        print(json.dumps(r))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="parameters, MACs and output shape of a paper preset",
                              description=__doc__)
    p.add_argument("--arch", choices=["lmnet", "lgmsnet"], required=True)
    p.add_argument("--dim", type=int, choices=[2, 3], required=True)
    p.add_argument("--in-channels", type=int, required=True)
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--patch", type=int, nargs="+", required=True)
    p.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    p.set_defaults(func=_info)
