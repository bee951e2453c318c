"""``nnunet-lmnet info``: parameters, MACs and output shape of a paper preset.

MACs are counted for one forward pass (batch 1, eval mode) by ``benchmark.complexity.count_macs``: torch's
FlopCounterMode (convolutions, linear layers and matrix products, including the global attention's QK^T and AV
through SDPA) plus the neighbourhood attention's QK^T and AV (2 x positions x window x channels per layer), which
runs as element-wise products the counter does not see and is declared by the module (``extra_macs``). Norms,
activations, softmax and interpolation are not counted.
"""
from __future__ import annotations

import json

from .cli_types import positive_int
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


def _set_fuse_in_eval(net, value: bool) -> None:
    for m in net.modules():
        if hasattr(m, "fuse_in_eval"):
            m.fuse_in_eval = value


def describe(arch: str, dim: int, in_channels: int, classes: int, patch: list[int]) -> dict:
    import torch

    from nnunet_lmnet.architectures.stage_geometry import total_stride
    from nnunet_lmnet.benchmark.complexity import count_macs

    for flag, values in (("--in-channels", [in_channels]), ("--classes", [classes]), ("--patch", patch)):
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise UserError(f"{flag} takes positive integers, got {bad[0]!r}")
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
    p.add_argument("--in-channels", type=positive_int, required=True)
    p.add_argument("--classes", type=positive_int, required=True)
    p.add_argument("--patch", type=positive_int, nargs="+", required=True)
    p.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    p.set_defaults(func=_info)
