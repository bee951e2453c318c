"""LGMSNet's max pooling (channels-last CPU kernel on NCHW maps without autograd) equals nn.MaxPoolNd: values,
gradients (autograd keeps the plain kernel), layout. Maps with many ties (small integers, ReLU zeros).
"""
import pytest
import torch
import torch.nn as nn

from nnunet_lmnet.architectures.max_pool import MaxPool2d, MaxPool3d

CASES = [
    (MaxPool2d, nn.MaxPool2d, (2, 16, 32, 48), (2, 2)),
    (MaxPool2d, nn.MaxPool2d, (1, 8, 33, 17), (2, 2)),  # odd sizes: the last row / column is dropped
    (MaxPool3d, nn.MaxPool3d, (2, 8, 8, 16, 16), (2, 2, 2)),
    (MaxPool3d, nn.MaxPool3d, (2, 8, 5, 16, 12), (1, 2, 2)),  # anisotropic stride (nnU-Net plans)
]


def _tied(shape, dtype, seed):
    """Values with ties in nearly every window: small integers, a third of them clamped to 0."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 4, shape, generator=g).to(dtype).clamp_min(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ours, reference, shape, kernel", CASES)
def test_channels_last_pool_equals_the_plain_pool(ours, reference, shape, kernel, dtype):
    x = _tied(shape, dtype, 0).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(kernel, kernel)(x), reference(kernel, kernel)(x_ref)
    assert torch.equal(y, y_ref) and y.is_contiguous()
    grad = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    y.backward(grad)
    y_ref.backward(grad)
    assert torch.equal(x.grad, x_ref.grad)
    with torch.no_grad():  # the channels-last route
        assert torch.equal(ours(kernel, kernel)(x), y_ref) and ours(kernel, kernel)(x).is_contiguous()


def test_pool_keeps_a_channels_last_input_as_it_is():
    x = _tied((2, 8, 16, 16), torch.float32, 2).contiguous(memory_format=torch.channels_last)
    y = MaxPool2d(2, 2)(x)
    assert torch.equal(y, nn.MaxPool2d(2, 2)(x)) and y.is_contiguous(memory_format=torch.channels_last)


def test_lgmsnet_builds_its_pools_from_this_module():
    from nnunet_lmnet.architectures.lgmsnet import LGMSNet

    net = LGMSNet(1, 2, features_per_stage=(8, 8, 16), spatial_dims=3)
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool3d)]
    assert pools and all(isinstance(m, MaxPool3d) for m in pools)
