"""LGMSNet: exact upstream parameter counts, nnU-Net contract (shapes, DS, state_dict, gradients), sparse GMS."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from batch_norm_helpers import batch_norm_calls, randomize_bn

from nnunet_lmnet.architectures import lgmsnet as lgmsnet_module
from nnunet_lmnet.architectures.gms_block import GMSBlock
from nnunet_lmnet.architectures.gms_transformer import (
    Attention,
    SparseTransformer,
    sparse_fold,
    sparse_patch_size,
    sparse_unfold,
)
from nnunet_lmnet.architectures.lgms_layers import FusionConv
from nnunet_lmnet.architectures.lgmsnet import LGMSNet
from nnunet_lmnet.architectures.lms_block import LMSBlock

ANISO_STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
ANISO_KERNELS = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def paper_net(dim: int, in_ch: int, classes: int) -> LGMSNet:
    return LGMSNet(in_ch, classes, spatial_dims=dim, deep_supervision_heads=False)


def expected_sizes(patch, strides):
    sizes, cur = [], list(patch)
    for s in strides[:-1]:
        cur = [c // k for c, k in zip(cur, s)]
        sizes.append(tuple(cur))
    return sizes


# ---------------------------------------------------------------- parameter counts (spec §6 tables)


@pytest.mark.parametrize(
    "dim, in_ch, classes, expected",
    [(2, 3, 2, 2_321_410), (2, 3, 1, 2_321_393), (3, 1, 14, 6_193_742)],
)
def test_total_params_match_official_code(dim, in_ch, classes, expected):
    assert n_params(paper_net(dim, in_ch, classes)) == expected


@pytest.mark.parametrize(
    "dim, stem, encoder, decoder",
    [
        (
            2,
            480,
            [1_672, 1_960, 6_224, 391_424, 538_880],
            [(4_656, 8_016), (18_528, 31_392), (73_920, 262_592), (147_840, 833_792)],
        ),
        (
            3,
            448,
            [6_992, 7_248, 19_104, 980_800, 1_423_168],
            [(13_840, 17_008), (55_328, 67_808), (221_248, 630_112), (442_496, 2_307_904)],
        ),
    ],
)
def test_per_part_params_match_official_code(dim, stem, encoder, decoder):
    net = paper_net(dim, 3 if dim == 2 else 1, 2 if dim == 2 else 14)
    assert n_params(net.stem) == stem
    assert [n_params(s) for s in net.encoder] == encoder
    # decoder.stages[l] = (Up_{l+2}, Up_conv_{l+2}) upstream
    assert [(n_params(s.up), n_params(s.block)) for s in net.decoder.stages] == decoder
    fusion, gms = net.decoder.stages[2].block
    assert (n_params(fusion), n_params(gms)) == ((124_224, 138_368) if dim == 2 else (270_784, 359_328))


def test_block_params_match_official_code():
    assert n_params(LMSBlock(16, 2)) == 1_384
    assert n_params(LMSBlock(16, 3, norm="instance")) == 6_736
    assert n_params(LMSBlock(32, 2)) == 4_048
    assert n_params(LMSBlock(32, 3, norm="instance")) == 17_056
    assert n_params(SparseTransformer(96, 256)) == 62_272
    assert n_params(SparseTransformer(48, 128)) == 18_848
    enc4 = GMSBlock(64, 128, 2, split=(96, 32))
    parts = [enc4.conv1, enc4.conv2, enc4.local, enc4.transformer, enc4.conv3, enc4.conv4]
    assert [n_params(m) for m in parts] == [73_984, 16_640, 448, 62_272, 16_640, 221_440]
    assert n_params(enc4) == 391_424
    assert n_params(GMSBlock(64, 128, 3, split=(96, 32), norm="instance")) == 980_800
    assert n_params(FusionConv(2, 128, 64)) == 124_224


def test_deep_supervision_heads_add_one_1x1_conv_per_extra_level():
    # heads for levels 1..3 (32, 64, 128 channels) with bias, 2 classes
    assert n_params(LGMSNet(3, 2)) == 2_321_410 + (33 + 65 + 129) * 2
    assert len(LGMSNet(3, 2).decoder.seg_layers) == 4
    assert len(paper_net(2, 3, 2).decoder.seg_layers) == 1


def test_weights_do_not_depend_on_patch_or_plan_geometry():
    iso = LGMSNet(1, 3, spatial_dims=3)
    aniso = LGMSNet(1, 3, strides=ANISO_STRIDES)
    assert {k: v.shape for k, v in iso.state_dict().items()} == {k: v.shape for k, v in aniso.state_dict().items()}


# ---------------------------------------------------------------- shapes and deep supervision


@pytest.mark.parametrize(
    "dim, patch, strides, kernels",
    [
        (2, (64, 64), None, None),
        (3, (32, 32, 32), None, None),
        (3, (16, 48, 48), ANISO_STRIDES, ANISO_KERNELS),  # in-plane map at 1/16 is 3x3 (odd)
    ],
)
def test_output_shapes_with_and_without_deep_supervision(dim, patch, strides, kernels):
    torch.manual_seed(0)
    net = LGMSNet(2, 3, True, spatial_dims=dim, strides=strides, kernel_sizes=kernels).eval()
    x = torch.randn(1, 2, *patch)
    strides = strides or [[1] * dim] + [[2] * dim] * 4
    with torch.no_grad():
        outs = net(x)
        assert isinstance(outs, list) and len(outs) == 4
        assert [tuple(o.shape[2:]) for o in outs] == expected_sizes(patch, strides)
        assert all(o.shape[:2] == (1, 3) for o in outs)
        net.decoder.deep_supervision = False
        single = net(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 3, *patch)
    torch.testing.assert_close(single, outs[0])  # DS off returns the same main head


@pytest.mark.parametrize("n_stages", [2, 3, 4, 5, 6])
def test_any_depth_from_2_to_6_stages(n_stages):
    torch.manual_seed(0)
    widths = [8, 16, 32, 64, 64, 64][:n_stages]
    net = LGMSNet(1, 2, True, features_per_stage=widths).eval()
    kinds = [type(s.block).__name__ for s in net.encoder]
    assert kinds == ["Sequential"] * min(n_stages, 3) + ["GMSBlock"] * max(n_stages - 3, 0)
    with torch.no_grad():
        outs = net(torch.randn(1, 1, 32, 32))
    assert [o.shape[-1] for o in outs] == [32 // 2**i for i in range(n_stages - 1)]


def test_odd_feature_maps_run_through_the_whole_net():
    # 80x48: the 1/16 map is 5x3, both odd; upstream fails here, the run-time patch choice does not.
    torch.manual_seed(0)
    net = LGMSNet(3, 2, True).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 80, 48))
    assert [tuple(o.shape[2:]) for o in outs] == [(80, 48), (40, 24), (20, 12), (10, 6)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_ds_state_dict_keys_identical_and_loadable():
    torch.manual_seed(0)
    on, off = LGMSNet(1, 3, True), LGMSNet(1, 3, False)
    assert list(on.state_dict()) == list(off.state_dict())
    off.load_state_dict(on.state_dict())  # strict: what nnU-Net's predictor does


def test_ds_without_heads_raises():
    with pytest.raises(ValueError, match="deep_supervision_heads"):
        LGMSNet(3, 2, True, deep_supervision_heads=False)
    net = paper_net(2, 3, 2)
    with pytest.raises(ValueError, match="deep_supervision_heads"):
        net.decoder.deep_supervision = True  # nnU-Net's toggle must fail loudly, not drop DS targets
    net.decoder.deep_supervision = False
    assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_kwargs_round_trip_through_json():
    kwargs = dict(features_per_stage=[16, 32, 64, 128, 128], strides=ANISO_STRIDES, kernel_sizes=ANISO_KERNELS,
                  gms_split_ratio=[3, 1], attention_heads=4, head_dim=8, mlp_ratio=2, deep_supervision_heads=True,
                  norm="instance_affine")
    a = LGMSNet(input_channels=1, num_classes=2, deep_supervision=True, **kwargs)
    b = LGMSNet(input_channels=1, num_classes=2, deep_supervision=False, **json.loads(json.dumps(kwargs)))
    b.load_state_dict(a.state_dict())
    assert not hasattr(a, "initialize")  # nnU-Net would call it


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(strides=[[2, 2], [2, 2]], features_per_stage=[8, 16]), "strides\\[0\\]"),
        (dict(strides=[[1, 1], [2, 2]]), "5 stages"),
        (dict(kernel_sizes=[[5, 5]] * 5), "3 or 1"),
        (dict(strides=[[1, 1, 1]] * 5, spatial_dims=2), "disagree"),
        (dict(features_per_stage=[16, 32, 64, 128, 130]), "split"),
        (dict(features_per_stage=[6, 32, 64]), "divisible"),
        (dict(norm="group"), "norm"),
    ],
)
def test_invalid_configurations_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LGMSNet(1, 2, **kwargs)


# ---------------------------------------------------------------- sparse GMS


def test_sparse_unfold_token_layout_is_row_major_offsets():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    z = sparse_unfold(x, (2, 2))
    assert z.shape == (2, 4, 6, 3)
    for ph in range(2):
        for pw in range(2):
            # offset index = ph * 2 + pw; token index = h * 3 + w (row-major over the 2x3 patch grid)
            expected = x[:, :, ph::2, pw::2].reshape(2, 3, 6).transpose(1, 2)
            assert torch.equal(z[:, ph * 2 + pw], expected)
    assert torch.equal(sparse_fold(z, (2, 2), (4, 6)), x)
    x3 = torch.randn(1, 5, 4, 3, 6)
    assert torch.equal(sparse_fold(sparse_unfold(x3, (2, 1, 2)), (2, 1, 2), (4, 3, 6)), x3)
    with pytest.raises(ValueError, match="divisible"):
        sparse_unfold(x3, (2, 2, 2))


def test_sparse_attention_is_global_attention_per_offset_subgrid():
    torch.manual_seed(0)
    st = SparseTransformer(8, 16, heads=2, head_dim=4).eval()
    x = torch.randn(2, 8, 4, 6)
    with torch.no_grad():
        out = st(x)  # patch (2, 2) chosen automatically
        for i in range(2):
            for j in range(2):
                sub = x[:, :, i::2, j::2]
                torch.testing.assert_close(out[:, :, i::2, j::2], st(sub, patch=(1, 1)))
        # and it is not plain global attention over all positions
        assert not torch.allclose(out, st(x, patch=(1, 1)), atol=1e-4)


def test_attention_matches_eager_softmax_reference():
    torch.manual_seed(0)
    attn = Attention(12, heads=4, head_dim=8)
    z = torch.randn(3, 10, 12)
    q, k, v = (t.reshape(3, 10, 4, 8).transpose(1, 2) for t in (z @ attn.qkv.weight.T).chunk(3, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) * 8**-0.5, dim=-1)
    ref = attn.proj((weights @ v).transpose(1, 2).reshape(3, 10, 32))
    torch.testing.assert_close(attn(z), ref)


@pytest.mark.parametrize("dim, size, patch", [(2, (5, 7), (1, 1)), (3, (3, 5, 6), (1, 1, 2)), (2, (4, 6), (2, 2))])
def test_gms_patch_is_chosen_per_axis_from_parity(dim, size, patch):
    torch.manual_seed(0)
    block = GMSBlock(16, 16, dim, split=(12, 4)).eval()
    x = torch.randn(2, 16, *size)
    assert sparse_patch_size(size) == patch
    with torch.no_grad():
        out = block(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, block(x, patch=patch))
        if max(patch) > 1:  # the choice matters: patch 1 everywhere gives a different result
            assert not torch.allclose(out, block(x, patch=(1,) * dim), atol=1e-4)


# ---------------------------------------------------------------- training, precision, anisotropy


@pytest.mark.parametrize(
    "dim, batch, patch, strides", [(2, 2, (32, 32), None), (3, 1, (8, 32, 32), ANISO_STRIDES)]
)
def test_every_parameter_gets_a_gradient_with_ds(dim, batch, patch, strides):
    torch.manual_seed(0)
    net = LGMSNet(1, 3, True, spatial_dims=dim, strides=strides).train()
    outs = net(torch.randn(batch, 1, *patch))
    sum(o.sum() for o in outs).backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert all(head.weight.grad.abs().sum() > 0 for head in net.decoder.seg_layers)


@pytest.mark.parametrize(
    "dim, batch, patch, strides", [(2, 2, (32, 32), None), (3, 1, (16, 32, 32), ANISO_STRIDES)]
)
def test_bf16_autocast_gives_finite_outputs_and_loss(dim, batch, patch, strides):
    torch.manual_seed(0)
    net = LGMSNet(1, 3, True, spatial_dims=dim, strides=strides).train()
    x = 10 * torch.randn(batch, 1, *patch)
    target = torch.randint(0, 3, (batch, *patch))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = net(x)
        loss = nn.functional.cross_entropy(outs[0].float(), target)
    assert outs[0].dtype == torch.bfloat16
    assert all(torch.isfinite(o).all() for o in outs)
    assert torch.isfinite(loss)
    if dim == 2:  # backward in 3D bf16 is slow on CPU; the 2D pass covers the same code path
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_flat_axis_kernels_follow_the_plan():
    # levels 0-3 flat on the first axis (covers stem, LMS, up-conv, fusion, both GMS kinds), level 4 isotropic
    kernels = [[1, 3, 3]] * 4 + [[3, 3, 3]]
    net = LGMSNet(1, 2, True, strides=ANISO_STRIDES, kernel_sizes=kernels)

    def first_axis(module):
        return {m.weight.shape[2] for m in module.modules() if isinstance(m, nn.Conv3d)}

    lms = net.encoder[0].block.lms
    assert [tuple(c.weight.shape[2:]) for c in lms.depthwise] == [(1, 3, 3), (1, 5, 5), (1, 7, 7), (1, 9, 9)]
    assert net.stem[0].weight.shape[2:] == (1, 3, 3)
    for level in range(4):
        assert first_axis(net.encoder[level]) == {1}
        assert first_axis(net.decoder.stages[level]) == {1}
    assert net.encoder[3].block.local.body[0].weight.shape[2:] == (1, 3, 3)
    assert first_axis(net.encoder[4]) == {1, 3}  # isotropic level: 3x3x3 convs (1x1x1 convs too)
    assert net.encoder[4].block.conv1[0].weight.shape[2:] == (3, 3, 3)
    # pooling follows the plan's anisotropic stride
    assert net.encoder[1].pool.kernel_size == (1, 2, 2) and net.encoder[1].pool.stride == (1, 2, 2)


def test_isotropic_default_geometry_is_upstream():
    net = paper_net(3, 1, 14)
    assert [tuple(c.weight.shape[2:]) for c in net.encoder[1].block.lms.depthwise] == [
        (3, 3, 3), (5, 5, 5), (7, 7, 7), (9, 9, 9)
    ]
    assert isinstance(net.stem[1], nn.InstanceNorm3d) and not net.stem[1].affine
    assert isinstance(net.encoder[3].block.local.body[1], nn.BatchNorm3d)  # upstream keeps BN here in 3D
    assert isinstance(paper_net(2, 3, 2).stem[1], nn.BatchNorm2d)


def test_modules_do_not_import_nnunetv2():
    package = Path(lgmsnet_module.__file__).parent
    files = [package / f"{name}.py" for name in ("lgmsnet", "lgms_layers", "lms_block", "gms_block",
                                                   "gms_transformer", "ops", "heads")]
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "nnunetv2" for n in names), file.name


def test_expected_sizes_helper():
    assert expected_sizes((16, 48, 48), ANISO_STRIDES) == [(16, 48, 48), (16, 24, 24), (8, 12, 12), (4, 6, 6)]


@pytest.mark.parametrize("unit", ["conv-norm-act", "fusion"])
def test_eval_units_fold_their_batch_norms(unit):
    """In eval mode a conv-norm-act unit folds its BN into the conv, the decoder fusion its two inner BNs into the
    1x1 convs after them; same values as the BN-running form (float64), and those BNs do not run."""
    from nnunet_lmnet.architectures.lgms_layers import ConvNormAct, FusionConv

    torch.manual_seed(0)
    module = (ConvNormAct(2, 6, 8, 3, bias=True) if unit == "conv-norm-act" else FusionConv(2, 8, 4)).double()
    randomize_bn(module, seed=5)
    calls = batch_norm_calls(module)
    module.eval()
    x = torch.randn(2, module[0].in_channels, 9, 10, dtype=torch.float64)
    with torch.no_grad():
        folded = module(x)
        folded_calls = list(calls)
        calls.clear()
        ref = torch.nn.Sequential.forward(module, x)  # layer by layer, BN with running statistics
    assert len(calls) == (1 if unit == "conv-norm-act" else 3)
    assert folded_calls == ([] if unit == "conv-norm-act" else [module[8]])
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(folded, ref, rtol=0, atol=1e-12)


def test_eval_fusion_with_instance_norm_equals_the_layer_by_layer_form():
    """3D LGMSNet (InstanceNorm): nothing to fold; in inference the GELUs overwrite fresh maps, never the input."""
    torch.manual_seed(0)
    module = FusionConv(3, 8, 4, norm="instance").double().eval()
    x = torch.randn(1, 8, 5, 6, 7, dtype=torch.float64)
    original = x.clone()
    ref = torch.nn.Sequential.forward(module, x)
    with torch.inference_mode():
        out = module(x)
    assert torch.equal(out, ref) and torch.equal(x, original)


@pytest.mark.parametrize("dim", [2, 3])
def test_eval_up_conv_runs_channels_last_with_the_same_values(dim):
    from nnunet_lmnet.architectures.lgms_layers import UpConv

    torch.manual_seed(0)
    up = UpConv(dim, 6, 4, norm="instance").double()  # InstanceNorm: train and eval compute the same function
    x = torch.randn(1, 6, *([5] * dim), dtype=torch.float64)
    size = (10,) * dim
    layout = torch.channels_last if dim == 2 else torch.channels_last_3d
    interpolated = []  # the conv's input is the interpolated map
    up.conv.register_forward_pre_hook(lambda m, args: interpolated.append(args[0].is_contiguous(memory_format=layout)))
    train_out = up.train()(x, size)
    with torch.no_grad():
        eval_out = up.eval()(x, size)
    assert interpolated == [False, True]
    torch.testing.assert_close(eval_out, train_out, rtol=0, atol=1e-12)
