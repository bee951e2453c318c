"""Inference-only in-place steps (architectures/in_place.py): without autograd the networks overwrite fresh maps
instead of writing new ones. They must compute exactly what the plain forms compute and never touch the input."""
import pytest
import torch

from nnunet_lmnet.architectures.in_place import add_in_place
from nnunet_lmnet.architectures.lgmsnet import LGMSNet
from nnunet_lmnet.architectures.lmnet import LMNet

ANISO = dict(strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]])
NETS = {
    "lgmsnet-2d": (lambda: LGMSNet(1, 3, features_per_stage=(16, 16, 16, 32), spatial_dims=2), (1, 1, 32, 48)),
    # 3D: InstanceNorm in the conv units (not folded), BatchNorm in the GMS depthwise branch
    "lgmsnet-3d-aniso": (lambda: LGMSNet(1, 3, features_per_stage=(16, 16, 16, 32), **ANISO), (1, 1, 8, 32, 32)),
    "lmnet-2d": (lambda: LMNet(1, 3, features_per_stage=(12, 24, 36, 48), spatial_dims=2), (1, 1, 32, 48)),
}


def _net(case, dtype):
    make, shape = NETS[case]
    torch.manual_seed(0)
    net = make().to(dtype)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # non-trivial running statistics, so the eval BatchNorms do something
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval(), torch.randn(*shape, dtype=dtype, generator=g)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("case", list(NETS))
def test_inference_equals_the_plain_form_and_keeps_the_input(case):
    net, x = _net(case, torch.float64)
    original = x.clone()
    with torch.enable_grad():  # autograd on: the plain out-of-place ops
        plain = net(x)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            out = net(x)
        assert torch.equal(out, plain), f"{mode.__name__}: max difference {float((out - plain).abs().max())}"
    assert torch.equal(x, original)


@pytest.mark.parametrize("case", ["lgmsnet-2d", "lgmsnet-3d-aniso"])
def test_inference_under_autocast_equals_the_plain_form(case):
    """Under autocast maps of two precisions meet in the residual adds: an in-place add would round a float32
    sum to the reduced precision, so add_in_place keeps the plain add there."""
    net, x = _net(case, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.enable_grad():
            plain = net(x)
        with torch.no_grad():
            out = net(x)
    assert out.dtype == plain.dtype
    assert torch.equal(out, plain)


def test_add_in_place_only_where_the_result_is_the_same():
    fresh, other = torch.ones(4, dtype=torch.float16), torch.full((4,), 1e-3)
    out = add_in_place(fresh, other)
    assert out.dtype == torch.float32 and torch.equal(fresh, torch.ones(4, dtype=torch.float16))
    same = torch.ones(4)
    assert add_in_place(same, other).data_ptr() == same.data_ptr() and torch.equal(same, 1 + other)
    row = torch.ones(1, 4)
    assert add_in_place(row, torch.ones(3, 4)).shape == (3, 4)  # a broadcast result is a new tensor
