"""Plans derivation: every configuration of a default plans file (2d, 3d_fullres, 3d_lowres and the cascade that
inherits) describes our network afterwards, with the plan's geometry truncated to the preset's depth."""
import json

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lmnet.plans.derive import derive_plans
from nnunet_lmnet.plans.presets import preset
from nnunet_lmnet.training.network_builder import build_network
from synthetic_plans import ANISO_3D_6, ISO_2D_7, ISO_3D_4, default_configuration, plans_with

ARCHS = ["lmnet", "lgmsnet"]


def _default_plans() -> dict:
    return plans_with({
        "2d": default_configuration(*ISO_2D_7, (64, 64)),
        "3d_fullres": default_configuration(*ANISO_3D_6, (16, 32, 32)),
        "3d_lowres": dict(default_configuration(*ISO_3D_4, (16, 16, 16)), data_identifier="nnUNetPlans_3d_lowres",
                          next_stage="3d_cascade_fullres"),
        "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
    })


@pytest.mark.parametrize("arch", ARCHS)
def test_every_configuration_describes_the_network(arch):
    source = _default_plans()
    plans = derive_plans(source, arch, plans_name=f"nnUNetPlans_{arch}")
    assert plans["plans_name"] == f"nnUNetPlans_{arch}"
    assert source["plans_name"] == "nnUNetPlans"  # the input is not modified
    pm = PlansManager(plans)
    depth = len(preset(arch)["arch_kwargs"]["features_per_stage"])
    for name in ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"):
        cm = pm.get_configuration(name)
        original = PlansManager(source).get_configuration(name)
        assert cm.network_arch_class_name == preset(arch)["network_class_name"]
        n = min(depth, len(original.pool_op_kernel_sizes))
        # pool_op_kernel_sizes is what nnU-Net's deep-supervision scales are computed from
        assert cm.pool_op_kernel_sizes == [list(s) for s in original.pool_op_kernel_sizes[:n]]
        assert cm.data_identifier == original.data_identifier  # preprocessed data reused
        assert len(cm.network_arch_init_kwargs["features_per_stage"]) == n
        json.dumps(cm.network_arch_init_kwargs)  # must survive the plans.json round trip
    # the derivation is idempotent: the trainers apply it to plans saved by an earlier run (--c, --val, predict)
    assert derive_plans(plans, arch) == plans


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name, cin", [("3d_lowres", 1), ("3d_cascade_fullres", 3)])
def test_lowres_and_cascade_networks_build_and_run(arch, name, cin):
    """The cascade's input = modalities + one-hot of the low-res prediction: channels come from the caller."""
    cm = PlansManager(derive_plans(_default_plans(), arch)).get_configuration(name)
    torch.manual_seed(0)
    net = build_network(arch, cm, cin, 3, enable_deep_supervision=False).eval()
    with torch.no_grad():
        out = net(torch.randn(1, cin, *cm.patch_size))
    assert out.shape == (1, 3, *cm.patch_size)


def test_a_configuration_of_the_other_network_is_refused():
    plans = derive_plans(_default_plans(), "lmnet")
    with pytest.raises(ValueError, match="already describes lmnet"):
        derive_plans(plans, "lgmsnet")
