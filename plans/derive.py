"""Derive this project's network description from an nnU-Net plans configuration.

One function serves both routes: the trainers rewrite the plans they are given (so the ``plans.json`` saved with a
run describes the network that was trained, and deep-supervision scales, ``--c``, validation and prediction all
agree), and ``nnunet-lmnet derive-plans`` writes the same rewrite to a new plans file for the stock trainer.
"""
from __future__ import annotations

import copy

from .presets import arch_of_class, preset


def derive_architecture(arch: str, architecture: dict) -> dict:
    """The `architecture` block for `arch` given a configuration's (default nnU-Net) architecture block.

    Depth = min(preset depth, planned stages); strides and kernel sizes are the plan's first stages. Idempotent:
    a block that already names one of our networks is returned unchanged (users may have edited it).
    """
    existing = arch_of_class(architecture.get("network_class_name", ""))
    if existing == arch:
        return copy.deepcopy(architecture)
    if existing is not None:
        raise ValueError(f"this plans configuration already describes {existing}, not {arch}; derive {arch} from "
                         "nnU-Net's default plans instead")
    kwargs = architecture.get("arch_kwargs", {})
    if "strides" not in kwargs or "kernel_sizes" not in kwargs:
        raise ValueError(
            "the plans configuration has no arch_kwargs.strides / kernel_sizes; derive from nnU-Net's default "
            "plans (nnUNetPlans or a ResEnc plans file)"
        )
    p = preset(arch)
    widths = p["arch_kwargs"]["features_per_stage"]
    n = min(len(widths), len(kwargs["strides"]))
    new_kwargs = dict(p["arch_kwargs"])
    new_kwargs.update(
        features_per_stage=list(widths[:n]),
        strides=[list(s) for s in kwargs["strides"][:n]],
        kernel_sizes=[list(k) for k in kwargs["kernel_sizes"][:n]],
    )
    return {"network_class_name": p["network_class_name"], "arch_kwargs": new_kwargs, "_kw_requires_import": []}


def derive_plans(plans: dict, arch: str, plans_name: str | None = None) -> dict:
    """A copy of `plans` in which every configuration with its own architecture block describes `arch`.

    Configurations that only inherit (e.g. 3d_cascade_fullres) pick the rewritten block up from their parent.
    `data_identifier` is untouched, so the preprocessed data is reused.
    """
    out = copy.deepcopy(plans)
    for name, cfg in out["configurations"].items():
        if "architecture" in cfg:
            cfg["architecture"] = derive_architecture(arch, cfg["architecture"])
    if plans_name is not None:
        out["plans_name"] = plans_name
    return out
