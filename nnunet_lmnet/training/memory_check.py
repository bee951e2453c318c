"""The trainers' start-of-training check: does our network need more activation memory than the plans allowed for?

nnU-Net's planner sizes patch and batch so that its default network fits the GPU memory target. Our trainers
train a different network at that patch and batch; when it keeps more activations for backward than nnU-Net's
network would, the run may not fit where nnU-Net's would, and one log line says so and how to re-plan.
"""
from __future__ import annotations

from nnunet_lmnet.plans.budget_planner import BUDGET_KEY
from nnunet_lmnet.plans.cli import default_target
from nnunet_lmnet.plans.derive import derive_architecture
from nnunet_lmnet.plans.memory_estimate import saved_bytes_per_sample_estimate
from nnunet_lmnet.plans.presets import DISPLAY_NAMES, arch_of_class


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def memory_warning(arch: str, configuration: dict, input_channels: int, num_outputs: int, dataset_name: str,
                   plans_name: str) -> str | None:
    """The line to log, or None when our network fits what the plans budgeted (or there is nothing to compare).

    `configuration`: the resolved plans configuration as nnU-Net planned it, before our trainers rewrite it."""
    if BUDGET_KEY in configuration:  # derive-plans --gpu-memory-target planned patch and batch for our network
        return None
    default = configuration["architecture"]
    if arch_of_class(default["network_class_name"]) is not None:  # plans of our network: no nnU-Net network known
        return None
    patch, batch = configuration["patch_size"], configuration["batch_size"]
    ours = batch * saved_bytes_per_sample_estimate(derive_architecture(arch, default), input_channels, num_outputs,
                                                   patch)
    budget = batch * saved_bytes_per_sample_estimate(default, input_channels, num_outputs, patch)
    if ours <= budget:
        return None
    source = "" if plans_name == "nnUNetPlans" else f" -s {plans_name}"
    return (f"Memory: {DISPLAY_NAMES[arch]} at patch {list(patch)} x batch {batch} keeps ~{_size(ours)} of activations "
            f"for backward, more than the ~{_size(budget)} of nnU-Net's {default['network_class_name'].split('.')[-1]} "
            f"that these plans budgeted (float32 estimates); if the GPU runs out of memory, re-plan: nnunet-lmnet "
            f"derive-plans -d {dataset_name} --arch {arch}{source} --gpu-memory-target <GPU GB> and train with "
            f"-p {default_target(arch, plans_name)}_<GPU GB>G")
