"""Activation memory of a network described by a plans architecture block, without running it at full size.

The quantity is what autograd keeps for backward per sample (``benchmark.saved_activations``: each storage once,
parameters excluded) in a training-mode forward. It is measured, not modelled, so changes to the networks (e.g.
recomputed blocks) are followed automatically: one training forward at a small patch (CPU, float32, batch 2 since
BatchNorm needs more than one value), divided by the batch and scaled by the number of voxels. Every map of a
convolutional network has voxels / prod(cumulative stride) positions, so the saved bytes are proportional to the
voxels; what does not scale (per-channel vectors such as squeeze-excitation's) was measured at 0.1-0.4 % of the
total at the measurement patch, so proportional scaling slightly over-estimates larger patches. A second
measurement to fit that constant would double the cost, which the planner pays for every topology it tries.
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence

import numpy as np


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} in arch_kwargs is not JSON-serialisable")


def _per_axis_strides(strides, dim: int) -> list[list[int]]:
    # dynamic_network_architectures also accepts one int per stage
    return [[int(v) for v in s] if isinstance(s, (list, tuple, np.ndarray)) else [int(s)] * dim for s in strides]


def measurement_patch(architecture: dict, dim: int) -> tuple[int, ...]:
    """The smallest patch divisible by the network's total stride with 2 bottleneck voxels (1, .., 1, 2): the
    least InstanceNorm accepts in training."""
    from nnunet_lmnet.architectures.stage_geometry import total_stride

    stride = total_stride(_per_axis_strides(architecture["arch_kwargs"]["strides"], dim))
    return tuple(stride[:-1]) + (2 * stride[-1],)


@functools.lru_cache(maxsize=256)
def _measured(class_name: str, kwargs_json: str, requires_import: tuple[str, ...], input_channels: int,
              num_classes: int, patch: tuple[int, ...]) -> int:
    """Saved bytes per sample of one training forward at `patch` (cached: the planner asks for the same often)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunet_lmnet.benchmark.saved_activations import saved_bytes_per_sample

    # fork_rng: building the network and the input draw random numbers; callers (a trainer) must not see that
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        net = get_network_from_plans(class_name, json.loads(kwargs_json), requires_import, input_channels,
                                     num_classes, allow_init=False, deep_supervision=True).float().train()
        x = torch.randn(2, input_channels, *patch)
        return saved_bytes_per_sample(net, x)


def saved_bytes_per_sample_estimate(architecture: dict, input_channels: int, num_classes: int,
                                    patch_size: Sequence[int]) -> float:
    """Estimated bytes saved for backward per sample by the network `architecture` describes at `patch_size`.

    `architecture`: a plans configuration's block (``network_class_name``, ``arch_kwargs``, optional
    ``_kw_requires_import``), nnU-Net's networks and ours alike; deep supervision on, as nnU-Net trains."""
    patch = measurement_patch(architecture, len(patch_size))
    measured = _measured(architecture["network_class_name"],
                         json.dumps(architecture["arch_kwargs"], sort_keys=True, default=_jsonable),
                         tuple(architecture.get("_kw_requires_import", ())), int(input_channels), int(num_classes),
                         patch)
    return measured * math.prod(int(v) for v in patch_size) / math.prod(patch)
