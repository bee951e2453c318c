"""LM-Net against the numbers measured on the official code (specs/lmnet.md) and the re-parameterization."""
import pytest
import torch

from batch_norm_helpers import batch_norm_calls, randomize_bn

from nnunet_lmnet.architectures.lmnet import LMNet
from nnunet_lmnet.architectures.multibranch_block import MultiBranchBlock, branch_kernels


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return LMNet(3, 2, deep_supervision_heads=False)


def test_paper_preset_parameter_count(paper):
    assert n_params(paper) == 3_966_566


def test_parameter_count_per_part(paper):
    assert n_params(paper.gft) == 2_428_608
    assert n_params(paper.encoder_stages) + n_params(paper.downsample) == 430_056
    assert [n_params(s) for s in paper.encoder_stages] == [4_248, 13_176, 42_480, 149_472]
    assert [n_params(d) for d in paper.downsample] == [2_616, 10_416, 41_568, 166_080]
    # LFT multi-skip + neighbourhood transformer per level (official skip4..1 / natt4..1)
    assert [n_params(l.pyramid) for l in paper.lft] == [6_540, 33_840, 135_072, 290_784]
    assert [n_params(l.transformer) for l in paper.lft] == [2_892, 10_380, 40_044, 158_124]
    assert [n_params(u) for u in paper.decoder.up] == [2_604, 10_392, 41_520, 165_984]
    assert [n_params(b) for b in paper.decoder.blocks] == [4_572, 13_176, 42_480, 149_472]
    assert n_params(paper.decoder.seg_layers) == 26


def test_variants_of_the_count():
    assert n_params(LMNet(3, 1, deep_supervision_heads=False)) == 3_966_553
    assert n_params(LMNet(3, 2, deep_supervision_heads=False, na_rpb=False)) == 3_965_366
    # nnU-Net build: heads on decoder levels 1..3 add (24 + 48 + 96) * 2 + 3 * 2 parameters
    assert n_params(LMNet(3, 2, deep_supervision=True)) == 3_966_566 + 168 * 2 + 3 * 2


def test_reparameterized_count_and_outputs():
    torch.manual_seed(0)
    net = LMNet(3, 2, deep_supervision_heads=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        net.reparameterize()
        after = net(x)
    assert n_params(net) == 3_934_886  # the official code leaves 38,880 dead large_conv params registered
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


def test_block_parameter_formula():
    # conv4 block 1 of the official net: (96, 192, 96) -> 74,736
    assert n_params(MultiBranchBlock(96, 192, 96, (3, 3))) == 74_736


@pytest.mark.parametrize(
    "kernel, expected",
    [
        ((3, 3), {"large": (5, 5), "square": (3, 3), "axial0": (3, 1), "axial1": (1, 3)}),
        ((3, 3, 3), {"large": (5, 5, 5), "square": (3, 3, 3), "axial0": (3, 1, 1), "axial1": (1, 3, 1),
                     "axial2": (1, 1, 3)}),
        ((1, 3, 3), {"large": (1, 5, 5), "square": (1, 3, 3), "axial1": (1, 3, 1), "axial2": (1, 1, 3)}),
    ],
)
def test_branch_kernels_follow_the_plan(kernel, expected):
    assert branch_kernels(kernel) == expected


def test_branch_kernels_reject_other_sizes():
    with pytest.raises(ValueError, match="1 or 3"):
        branch_kernels((5, 5))


@pytest.mark.parametrize("kernel", [(3, 3), (3, 3, 3), (1, 3, 3)])
def test_block_fusion_is_exact(kernel):
    torch.manual_seed(0)
    block = MultiBranchBlock(8, 16, 8, kernel)
    randomize_bn(block)
    block.eval()
    x = torch.randn(2, 8, *([6] * len(kernel)))
    with torch.no_grad():
        block.fuse_in_eval = False
        ref = block(x)
        block.fuse_in_eval = True
        on_the_fly = block(x)
        block.reparameterize()
        deployed = block(x)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(on_the_fly, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(deployed, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernel", [(3, 3), (1, 3, 3)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_in_place_inference_form_equals_autograd_form(kernel, layout, mode):
    """Without autograd the block overwrites its intermediate maps: bit-identical to the autograd form, and the
    block's input (which the shortcut reads last) is left untouched."""
    torch.manual_seed(0)
    block = MultiBranchBlock(8, 16, 8, kernel)
    randomize_bn(block)
    block.train(mode == "train")
    x = torch.randn(2, 8, *([6] * len(kernel)), dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)
    block = block.double()
    kept = x.clone()
    bn_state = {k: v.clone() for k, v in block.state_dict().items()}
    with torch.no_grad():
        in_place = block(x)
    block.load_state_dict(bn_state)  # train mode: the first call moved the running statistics
    with_autograd = block(x.clone().requires_grad_())
    assert in_place.abs().max() > 0.1
    assert torch.equal(in_place, with_autograd.detach())
    assert torch.equal(x, kept)


def test_fusion_leaves_state_dict_in_training_form():
    block = MultiBranchBlock(4, 8, 4, (3, 3))
    keys = list(block.state_dict())
    block.eval()
    with torch.no_grad():
        block(torch.randn(1, 4, 5, 5))
    assert list(block.state_dict()) == keys
    assert any(".branches.large.conv.weight" in "." + k for k in keys)


def test_fusion_works_after_syncbatchnorm_conversion():
    """DDP training converts BatchNorm to SyncBatchNorm; the fused eval path must read it the same way."""
    torch.manual_seed(0)
    block = MultiBranchBlock(4, 8, 4, (3, 3))
    randomize_bn(block)
    block.eval()
    x = torch.randn(1, 4, 7, 7)
    with torch.no_grad():
        block.fuse_in_eval = False
        ref = block(x)
        synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(block).eval()
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
        synced.fuse_in_eval = True
        torch.testing.assert_close(synced(x), ref, rtol=0, atol=1e-5)


def test_fused_eval_keeps_gradients_flowing_to_branch_weights():
    block = MultiBranchBlock(4, 8, 4, (3, 3)).eval()
    block(torch.randn(1, 4, 5, 5)).sum().backward()
    assert block.branches["axial0"].conv.weight.grad is not None


def test_lmnet_3d_anisotropic_shapes():
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    kernels = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    net = LMNet(1, 3, deep_supervision=True, strides=strides, kernel_sizes=kernels)
    stage0 = net.encoder_stages[0][0]
    assert stage0.branches["large"].conv.weight.shape[2:] == (1, 5, 5)
    outs = net(torch.randn(1, 1, 8, 32, 32))
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 32, 32), (8, 16, 16), (4, 8, 8), (2, 4, 4)]


def test_width_not_divisible_by_heads_is_refused():
    with pytest.raises(ValueError, match="not divisible by lft_heads"):
        LMNet(1, 2, features_per_stage=[16, 32, 64, 128, 256])


def test_first_stride_must_be_one():
    with pytest.raises(ValueError, match="first stage must not downsample"):
        LMNet(1, 2, strides=[[2, 2]] * 5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_reparameterize_keeps_dtype(dtype):
    torch.manual_seed(0)
    net = LMNet(1, 2, features_per_stage=(12, 24, 36), spatial_dims=2).to(dtype).eval()
    x = torch.randn(1, 1, 16, 16, dtype=dtype)
    with torch.no_grad():
        before = net(x)
        net.reparameterize()
        after = net(x)
    assert {p.dtype for p in net.parameters()} == {dtype}
    tol = 1e-12 if dtype == torch.float64 else 5e-2
    torch.testing.assert_close(after, before, rtol=tol, atol=tol)


@pytest.mark.parametrize("kernel", [(3, 3), (1, 3, 3)])
def test_eval_forms_fold_every_batch_norm(kernel):
    """In eval mode the multi-branch block runs no BatchNorm at all: the expand conv's BN is folded into it as
    the branches' are into the fused depthwise conv; same values as the BN-running form (float64)."""
    torch.manual_seed(0)
    block = MultiBranchBlock(8, 16, 8, kernel).double()
    randomize_bn(block)
    block.eval()
    calls = batch_norm_calls(block)
    x = torch.randn(2, 8, *([6] * len(kernel)), dtype=torch.float64)
    with torch.no_grad():
        block.fuse_in_eval = False
        ref = block(x)
        assert len(calls) == 1 + len(block.branches)
        calls.clear()
        block.fuse_in_eval = True
        folded = block(x)
    assert calls == []
    torch.testing.assert_close(folded, ref, rtol=0, atol=1e-12)


def test_local_pyramid_folds_its_batch_norm_in_eval():
    from nnunet_lmnet.architectures.lmnet_transformers import LocalPyramid

    torch.manual_seed(0)
    pyramid = LocalPyramid([12, 24, 48], 1, (3, 3), (2, 2), True, True).double()
    randomize_bn(pyramid)
    calls = batch_norm_calls(pyramid)
    finer, same, coarser = (torch.randn(2, c, s, s, dtype=torch.float64) for c, s in ((12, 16), (24, 8), (48, 4)))
    pyramid.eval()
    with torch.no_grad():
        folded = pyramid(finer, same, coarser)
        assert calls == []
        parts = [pyramid.finer(finer), pyramid.same(same),
                 pyramid.coarser(torch.nn.functional.interpolate(coarser, size=(8, 8), mode="bilinear",
                                                                 align_corners=True))]
        ref = pyramid.fuse(torch.cat(parts, 1))  # conv, BN with running statistics, GELU
    assert len(calls) == 1
    torch.testing.assert_close(folded, ref, rtol=0, atol=1e-12)


def test_3d_inference_keeps_every_block_channels_last():
    """In 3D PyTorch returns some dense convs (few input channels) channels-first; LM-Net's inference converts
    back before each multi-branch block and each attention's tokens, so no block runs on channels-first maps."""
    torch.manual_seed(0)
    net = LMNet(1, 2, False, features_per_stage=(12, 24, 36, 48), strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                kernel_sizes=[[3, 3, 3]] * 4).eval()
    layouts = []
    for m in net.modules():
        if isinstance(m, MultiBranchBlock):
            m.register_forward_pre_hook(
                lambda mod, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last_3d)))
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = net(x)
    assert len(layouts) == 12 and all(layouts), layouts
    torch.testing.assert_close(out, net(x).detach(), rtol=0, atol=1e-5)  # the autograd eval form
