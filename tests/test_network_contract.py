"""The run-time contract nnU-Net imposes on a network, for both architectures over a grid of synthetic plans.

Networks are built exactly as the trainers build them (default nnU-Net plans configuration -> derived
architecture -> network), so this also covers the derivation of strides/kernels from the plans.
"""
import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunet_lmnet.architectures.multibranch_block import MultiBranchBlock
from nnunet_lmnet.plans.derive import derive_architecture
from nnunet_lmnet.training.network_builder import build_network
from synthetic_plans import ANISO_3D_4, ANISO_3D_6, GRID, ISO_2D_4, default_configuration, ds_scales

ARCHS = ["lmnet", "lgmsnet"]


def _build(arch, geometry, patch, cin, cout, ds):
    strides, kernels = geometry
    cm = ConfigurationManager(default_configuration(strides, kernels, patch))
    torch.manual_seed(0)
    return build_network(arch, cm, cin, cout, ds), cm


def _network_strides(arch, geometry, patch):
    strides, kernels = geometry
    derived = derive_architecture(arch, default_configuration(strides, kernels, patch)["architecture"])
    return derived["arch_kwargs"]["strides"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("case", GRID, ids=[g[0] for g in GRID])
def test_contract(arch, case):
    _, geometry, patch, cin, cout = case
    net, _ = _build(arch, geometry, patch, cin, cout, ds=True)
    net_strides = _network_strides(arch, geometry, patch)
    x = torch.randn(2, cin, *patch)

    # Deep supervision on: one output per nnU-Net DS scale, highest resolution first.
    net.train()
    outs = net(x)
    assert isinstance(outs, (list, tuple))
    scales = ds_scales(net_strides)
    assert len(outs) == len(scales) == len(net_strides) - 1
    for out, scale in zip(outs, scales):
        expected = tuple(int(round(p * s)) for p, s in zip(patch, scale))
        assert out.shape == (2, cout, *expected)

    # Every parameter receives a gradient (nnU-Net's DDP has no find_unused_parameters).
    sum(o.float().square().mean() for o in outs).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"

    # Deep supervision off: a single full-resolution tensor; identical state_dict keys and shapes.
    net_off, _ = _build(arch, geometry, patch, cin, cout, ds=False)
    sd_on, sd_off = net.state_dict(), net_off.state_dict()
    assert list(sd_on) == list(sd_off)
    assert all(sd_on[k].shape == sd_off[k].shape for k in sd_on)
    net_off.load_state_dict(sd_on)
    net_off.eval()
    net.eval()
    with torch.no_grad():
        single = net_off(x)
        assert isinstance(single, torch.Tensor) and single.shape == (2, cout, *patch)
        # the toggle nnU-Net uses (network.decoder.deep_supervision) switches the same weights
        net.decoder.deep_supervision = False
        torch.testing.assert_close(net(x), single)


@pytest.mark.parametrize("case", GRID, ids=[g[0] for g in GRID])
def test_lmnet_fused_equals_training_form(case):
    _, geometry, patch, cin, cout = case
    net, _ = _build("lmnet", geometry, patch, cin, cout, ds=False)
    # Non-trivial BN statistics, so the fusion has something to fold.
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    net.eval()
    x = torch.randn(1, cin, *patch)
    blocks = [m for m in net.modules() if isinstance(m, MultiBranchBlock)]
    with torch.no_grad():
        for b in blocks:
            b.fuse_in_eval = False
        branches = net(x)
        for b in blocks:
            b.fuse_in_eval = True
        fused_on_the_fly = net(x)
        net.reparameterize()
        deployed = net(x)
    torch.testing.assert_close(fused_on_the_fly, branches, rtol=0, atol=1e-5)
    torch.testing.assert_close(deployed, branches, rtol=0, atol=1e-5)
    assert all(not hasattr(b, "branches") for b in blocks)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("geometry, patch", [(([[1, 1]] + [[2, 2]] * 4, [[3, 3]] * 5), (64, 64)),
                                             (ANISO_3D_6, (16, 32, 32))], ids=["2d", "3d-aniso"])
def test_autocast_cpu_is_finite(arch, dtype, geometry, patch):
    """CPU autocast as a proxy for CUDA AMP: fp16 has CUDA's overflow range (nnU-Net trains in fp16 and its
    predictor accumulates logits in fp16), bf16 its reduced precision."""
    net, _ = _build(arch, geometry, patch, 3, 2, ds=True)
    x = torch.randn(2, 3, *patch) * 50  # large inputs stress attention logits
    target = torch.randint(0, 2, (2, *patch))
    # PyTorch 2.14's oneDNN bf16 Conv3d weight gradient is garbage (up to 1e37, varying run to run) when the
    # input's first spatial axis is exactly 2, as at LGMSNet's deepest anisotropic stage here; outputs and input
    # gradients are right, and nnU-Net never autocasts on CPU. PyTorch's native kernels are right: use them, in
    # forward too (LM-Net's recomputation in backward must see the same kernels as its forward).
    with torch.backends.mkldnn.flags(enabled=dtype != torch.bfloat16 or len(patch) == 2):
        with torch.autocast("cpu", dtype=dtype):
            outs = net(x)
            loss = torch.nn.functional.cross_entropy(outs[0].float(), target)
        assert outs[0].dtype == dtype  # autocast really ran the network in reduced precision
        assert all(torch.isfinite(o).all() for o in outs)
        assert torch.isfinite(loss)
        loss.backward()
    bad = [n for n, p in net.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite parameter gradients: {bad[:5]}"


# Four stages and small patches: tracing time grows with the number of blocks (LM-Net's 6-stage anisotropic case
# took 2.5 minutes of the suite), while four stages already hold every kind of block, kernel and stride. LM-Net 2D
# is compiled, train and eval, in test_recompute.test_compiled_lean_form_matches_eager_plain (~1 min a capture).
@pytest.mark.parametrize("arch, geometry, patch", [("lgmsnet", ISO_2D_4, (32, 32)),
                                                   ("lmnet", ANISO_3D_4, (8, 16, 16)),
                                                   ("lgmsnet", ANISO_3D_4, (8, 16, 16))],
                         ids=["2d-lgmsnet", "3d-aniso-lmnet", "3d-aniso-lgmsnet"])
def test_torch_compile_traces_training_and_inference(arch, geometry, patch):
    """nnU-Net compiles the network by default on CUDA. The aot_eager backend runs the same graph capture and
    AOT-autograd backward as inductor, without code generation, so graph-level failures show up on CPU."""
    torch._dynamo.reset()
    net, _ = _build(arch, geometry, patch, 1, 2, ds=True)
    compiled = torch.compile(net, backend="aot_eager")
    x = torch.randn(2, 1, *patch)
    outs = compiled(x)  # training mode: dropout and BatchNorm batch statistics included
    sum(o.float().square().mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.eval()
    with torch.no_grad():
        # compiled runs take PyTorch's own 3D depthwise convs, eager ones 2D convs on views for flat kernels
        # (architectures/depthwise.py): equal in float64, float32 rounding differs by up to ~2e-5 here
        torch.testing.assert_close(compiled(x)[0], net(x)[0], rtol=1e-4, atol=5e-5)
    torch._dynamo.reset()
