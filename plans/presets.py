"""Architecture presets: the paper configurations, as measured on the official code.

In nnU-Net, widths and depth come from here (the networks' light weight is the point); strides and kernels come
from the plans, truncated to the preset's depth (see ``plans.derive``).
"""
from __future__ import annotations

import copy

PRESETS: dict[str, dict] = {
    "lmnet": {
        "network_class_name": "nnunet_lmnet.architectures.lmnet.LMNet",
        "arch_kwargs": {
            "features_per_stage": [12, 24, 48, 96, 192],
            "blocks_per_stage": 2,
            "expand_ratio": 2,
            "gft_heads": 12,
            "lft_heads": 12,
            "na_kernel": 3,
            "na_rpb": True,
            "mlp_ratio": 2.0,
            "dropout": 0.1,
            # keep only block inputs for backward and recompute the rest (same function and gradients);
            # false: keep every intermediate (more memory, no recomputation)
            "recompute": True,
        },
    },
    "lgmsnet": {
        "network_class_name": "nnunet_lmnet.architectures.lgmsnet.LGMSNet",
        "arch_kwargs": {
            "features_per_stage": [16, 32, 64, 128, 128],
            "recompute": True,  # as for LM-Net
        },
    },
}

# Display names used in tables and messages.
DISPLAY_NAMES = {"lmnet": "LM-Net", "lgmsnet": "LGMSNet"}


def preset(arch: str) -> dict:
    """A deep copy of the preset for `arch` ('lmnet' or 'lgmsnet')."""
    try:
        return copy.deepcopy(PRESETS[arch])
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(PRESETS)}") from None


def arch_of_class(network_class_name: str) -> str | None:
    """'lmnet' / 'lgmsnet' for one of our network classes, else None."""
    for name, p in PRESETS.items():
        if p["network_class_name"] == network_class_name:
            return name
    return None
