"""ONNX export of the networks as nnU-Net's predictor runs them, checked in ONNX Runtime (tiny networks from plans).

The trained-model route (`export-onnx` on a model folder, `predict --backend onnxruntime`) is in
test_predict_onnxruntime.py.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from nnunet_lmnet.benchmark.compute import build_benchmark_network
from nnunet_lmnet.errors import UserError
from nnunet_lmnet.export.onnx_export import export_network, ort_session
from nnunet_lmnet.export.onnx_fusions import contrib_operators
from synthetic_plans import default_configuration, plans_with

pytestmark = pytest.mark.usefixtures("one_thread")

ANISO_3D_2 = ([[1, 1, 1], [1, 2, 2]], [[1, 3, 3], [3, 3, 3]], (4, 16, 16))
ISO_2D_3 = ([[1, 1], [2, 2], [2, 2]], [[3, 3]] * 3, (32, 32))


def _tiny(arch: str, geometry, classes: int = 3):
    strides, kernels, patch = geometry
    cfg = default_configuration(strides, kernels, patch)
    net, cm = build_benchmark_network(arch, cfg, 1, classes, False)
    stride = [int(v) for v in np.prod(np.array(cm.pool_op_kernel_sizes), axis=0)]
    return net.eval(), list(patch), stride, cfg


def _ort(model, x: torch.Tensor) -> np.ndarray:
    session = ort_session(model.SerializeToString())
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _input_dims(model) -> list:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


@pytest.mark.parametrize("arch, geometry", [
    ("lmnet", ([[1, 1, 1], [1, 2, 2], [2, 2, 2], [1, 2, 2]], [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], (8, 32, 32))),
    ("lmnet", ([[1, 1], [2, 2], [2, 2], [2, 2]], [[3, 3]] * 4, (32, 48))),
    ("lgmsnet", ([[1, 1, 1], [1, 2, 2], [2, 2, 2], [1, 2, 2]], [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                 (8, 32, 32))),
], ids=["lmnet-3d-aniso", "lmnet-2d", "lgmsnet-3d-aniso"])
def test_export_only_forms_compute_the_eager_function(arch, geometry, monkeypatch):
    """What the networks run only while torch.export traces them (the whole-map neighbourhood attention, 3D
    depthwise convs as 2D ones, a plain average pool for the 3D adaptive one, 1x1 convolutions as Conv, token
    matrices for the linear layers) equals their eager forward, here in eager mode
    on 4-level plans (cheap: no export), in float64: the forms sum in other orders, so float32 differs by rounding."""
    net, patch, _, _ = _tiny(arch, geometry)
    net = net.double()
    x = torch.randn(2, 1, *patch, dtype=torch.float64)
    with torch.no_grad():
        eager = net(x)
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
        traced_form = net(x)
    torch.testing.assert_close(traced_form, eager, rtol=1e-10, atol=1e-10)


def test_lmnet_anisotropic_3d_fused_export_matches_pytorch():
    net, patch, stride, _ = _tiny("lmnet", ANISO_3D_2)
    before = copy.deepcopy(net.state_dict())
    done = export_network(net, patch, 1, stride, spatial="fixed", log=lambda *a: None)
    assert done.parity["max_rel"] <= 1e-4 and len(done.parity["checks"]) == 2
    dims = _input_dims(done.model)
    assert isinstance(dims[0], str) and dims[1:] == [1, *patch]  # dynamic batch, planned patch
    names = {i.name for i in done.model.graph.initializer}
    # LM-Net fused: no branch weights (the fused 3D kernels reach ONNX sliced per depth, under new names)
    assert not any(".branches." in n for n in names)
    assert "BatchNormalization" not in {n.op_type for n in done.model.graph.node}
    # the network given (the predictor's) is untouched: still the training form with its branches
    assert net.state_dict().keys() == before.keys() and all(torch.equal(net.state_dict()[k], v)
                                                            for k, v in before.items())
    x = torch.randn(3, 1, *patch)
    with torch.no_grad():
        assert _rel(_ort(done.model, x), net(x).numpy()) < 1e-4


def test_lgmsnet_2d_dynamic_sizes_are_multiples_of_twice_the_stride():
    """LGMSNet's sparse transformer follows the parity of the map: its dynamic axes step by 2x the total stride,
    and a size off the planned one still matches PyTorch."""
    net, patch, stride, _ = _tiny("lgmsnet", ISO_2D_3)
    done = export_network(net, patch, 1, stride, spatial="dynamic", log=lambda *a: None)
    assert done.spatial_multiple == [2 * s for s in stride] and done.spatial_shape == "dynamic"
    up = [p + m for p, m in zip(patch, done.spatial_multiple)]  # one size up on every axis, checked at export
    assert len(done.parity["checks"]) == 3 and done.parity["checks"][2]["shape"] == [1, 1, *up]
    assert all(m <= p for m, p in zip(done.min_spatial_size, patch))
    assert all(isinstance(d, str) for d in _input_dims(done.model)[2:])
    x = torch.randn(2, 1, patch[0] + 4 * stride[0], patch[1] + 2 * stride[1])  # neither axis at the patch
    with torch.no_grad():
        assert _rel(_ort(done.model, x), net(x).numpy()) < 1e-4


def test_onnxruntime_target_fuses_attention_and_standard_target_keeps_standard_operators():
    """The default target rewrites LGMSNet's GMS attention (MatMul-Softmax-MatMul in the plain export) into ONNX
    Runtime's MultiHeadAttention; 'standard' writes only standard ONNX operators; both compute PyTorch's output."""
    net, patch, stride, _ = _tiny("lgmsnet", ([[1, 1, 1], [1, 2, 2], [2, 2, 2], [1, 2, 2]],
                                              [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], (8, 32, 32)))
    fused = export_network(net, patch, 1, stride, spatial="fixed", log=lambda *a: None)
    standard = export_network(net, patch, 1, stride, spatial="fixed", log=lambda *a: None, target="standard")
    assert "MultiHeadAttention" in contrib_operators(fused.model)
    assert fused.target == "onnxruntime" and fused.fusions.get("sdpa_via_mha", 0) >= 1
    assert contrib_operators(standard.model) == [] and standard.fusions == {}
    assert {n.domain for n in standard.model.graph.node} <= {"", "ai.onnx"}
    softmaxes = [sum(n.op_type == "Softmax" for n in m.model.graph.node) for m in (fused, standard)]
    assert softmaxes[0] < softmaxes[1]  # the attention softmaxes went into MultiHeadAttention
    x = torch.randn(2, 1, *patch)
    with torch.no_grad():
        ref = net(x).numpy()
    assert _rel(_ort(fused.model, x), ref) < 1e-4 and _rel(_ort(standard.model, x), ref) < 1e-4


class _DivergesInExport(nn.Module):
    """A network whose traced graph computes something else than its eager forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y + 1.0 if torch.compiler.is_exporting() else y


def test_export_refuses_when_onnx_runtime_differs():
    with pytest.raises(UserError, match=r"differs from PyTorch's by [0-9.e+-]+ relative .*not written"):
        export_network(_DivergesInExport().eval(), [16, 16], 1, [1, 1], spatial="fixed", log=lambda *a: None)


def test_patch_not_divisible_by_the_stride_is_refused():
    net, _, stride, _ = _tiny("default", ISO_2D_3)
    with pytest.raises(UserError, match="not a multiple of the network's total stride"):
        export_network(net, [34, 32], 1, stride, spatial="fixed", log=lambda *a: None)


def test_default_network_export_and_fold_ensemble_in_nnunet_predictor():
    """nnU-Net's default network exports too; in nnU-Net's predictor the ONNX Runtime stand-in switches sessions
    where nnU-Net loads each fold's weights, so a 2-fold ensemble (sliding window + mirroring) equals PyTorch's."""
    import onnx
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_lmnet.inference.onnx_backend import OnnxRuntimeNetwork, use_onnxruntime

    net, patch, stride, cfg = _tiny("default", ISO_2D_3)
    model_a = export_network(net, patch, 1, stride, spatial="fixed", log=lambda *a: None).model
    # fold "b": the same network with the last layer's weights negated, in PyTorch and in the ONNX file
    params_a = copy.deepcopy(net.state_dict())
    key = [k for k in params_a if k.endswith("weight")][-1]
    params_b = {**params_a, key: -params_a[key]}
    model_b = copy.deepcopy(model_a)
    init = next(i for i in model_b.graph.initializer if i.name == key)
    init.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(init), key))

    pm = PlansManager(plans_with({"2d": cfg}))
    dataset_json = {"labels": {"background": 0, "a": 1, "b": 2}, "channel_names": {"0": "x"},
                    "file_ending": ".png"}

    def predictor(params):
        p = nnUNetPredictor(tile_step_size=0.5, use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False)
        p.manual_initialization(copy.deepcopy(net), pm, pm.get_configuration("2d"), params, dataset_json,
                                "nnUNetTrainer", (0, 1))
        return p

    data = torch.randn(1, 1, 48, 40)  # (channels, slices, x, y): 2 x 2 tiles of the 32 x 32 patch
    reference = predictor([params_a, params_b]).predict_logits_from_preprocessed_data(data).float().numpy()
    ort = predictor([params_a, params_b])
    stand_in = use_onnxruntime(ort, [model_a.SerializeToString(), model_b.SerializeToString()], threads=1)
    assert isinstance(ort.network, OnnxRuntimeNetwork) and stand_in.active == 0
    got = ort.predict_logits_from_preprocessed_data(data).float().numpy()
    assert stand_in.active == 1  # nnU-Net switched to the second fold
    assert np.abs(got - reference).max() < 2e-2  # nnU-Net accumulates the tiles in float16
    only_a = predictor([params_a, params_a])
    use_onnxruntime(only_a, [model_a.SerializeToString()] * 2, threads=1)
    assert np.abs(only_a.predict_logits_from_preprocessed_data(data).float().numpy() - reference).max() > 0.1
