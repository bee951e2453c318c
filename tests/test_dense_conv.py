"""The networks' Conv2d/Conv3d: torch's convolution, with a faster CPU route only where nothing records the forward."""
import pytest
import torch
import torch.nn as nn

from nnunet_lmnet.architectures import dense_conv
from nnunet_lmnet.architectures.dense_conv import Conv2d, Conv3d
from nnunet_lmnet.architectures.ops import conv_nd


@pytest.fixture
def routes(monkeypatch):
    """Records which fast route each convolution took ("onednn", "pointwise")."""
    taken = []
    onednn, pointwise = torch.mkldnn_convolution, dense_conv.pointwise_conv_with

    def spy_onednn(*args):
        taken.append("onednn")
        return onednn(*args)

    def spy_pointwise(*args):
        taken.append("pointwise")
        return pointwise(*args)

    monkeypatch.setattr(torch, "mkldnn_convolution", spy_onednn)
    monkeypatch.setattr(dense_conv, "pointwise_conv_with", spy_pointwise)
    return taken


def _pair(cls, torch_cls, *args, **kwargs):
    torch.manual_seed(0)
    ours = cls(*args, **kwargs)
    plain = torch_cls(*args, **kwargs)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


def test_conv_nd_builds_them_and_they_are_torch_convolutions():
    assert conv_nd(2) is Conv2d and conv_nd(3) is Conv3d
    conv = Conv3d(4, 8, 3, padding=1)
    assert isinstance(conv, nn.Conv3d)
    assert list(conv.state_dict()) == ["weight", "bias"]


# The case PyTorch's heuristic sends to its slow im2col kernel: one sample, kernel 3, channels x D x H <= 20480.
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_small_3d_inference_takes_onednn_with_the_same_result(routes, layout):
    ours, plain = _pair(Conv3d, nn.Conv3d, 4, 16, 3, padding=1)
    x = torch.randn(1, 4, 16, 16, 16).contiguous(memory_format=layout)
    with torch.inference_mode():
        y, ref = ours(x), plain(x)
    assert routes == ["onednn"]
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    assert y.is_contiguous(memory_format=layout)


def test_strided_and_anisotropic_kernels_keep_their_geometry(routes):
    ours, plain = _pair(Conv3d, nn.Conv3d, 6, 5, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    x = torch.randn(1, 6, 5, 12, 10)
    with torch.no_grad():
        y, ref = ours(x), plain(x)
    assert routes == ["onednn"] and y.shape == ref.shape == (1, 5, 5, 6, 5)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_a_strided_view_as_input(routes):
    ours, plain = _pair(Conv3d, nn.Conv3d, 4, 8, 3, padding=1)
    x = torch.randn(1, 4, 9, 7, 6).transpose(2, 4)  # neither layout: oneDNN gets a view with odd strides
    with torch.inference_mode():
        y, ref = ours(x), plain(x)
    assert routes == ["onednn"]
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_pointwise_convolution_of_a_channels_last_map_is_one_matrix_product(routes):
    ours, plain = _pair(Conv2d, nn.Conv2d, 8, 3, 1)
    x = torch.randn(1, 8, 20, 24).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y, ref = ours(x), plain(x)
    assert routes == ["pointwise"]
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_training_float64_grouped_and_autocast_take_the_plain_convolution(routes):
    ours, plain = _pair(Conv3d, nn.Conv3d, 4, 8, 3, padding=1)
    x = torch.randn(1, 4, 8, 8, 8, requires_grad=True)
    y = ours(x)  # autograd records: bit for bit torch's convolution, same gradients
    assert torch.equal(y, plain(x))
    g_ours = torch.autograd.grad(y.sum(), (x, ours.weight))
    g_plain = torch.autograd.grad(plain(x).sum(), (x, plain.weight))
    assert all(torch.equal(a, b) for a, b in zip(g_ours, g_plain))

    with torch.inference_mode():
        ours64, plain64 = ours.double(), plain.double()
        assert torch.equal(ours64(x.detach().double()), plain64(x.detach().double()))
        grouped, plain_grouped = _pair(Conv3d, nn.Conv3d, 4, 8, 3, padding=1, groups=2)
        assert torch.equal(grouped(x.detach()), plain_grouped(x.detach()))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours32 = ours.float()
            assert ours32(x.detach()).dtype == torch.bfloat16
    assert routes == []


def test_padding_modes_other_than_zeros_take_the_plain_convolution(routes):
    ours, plain = _pair(Conv2d, nn.Conv2d, 3, 4, 3, padding=1, padding_mode="reflect")
    x = torch.randn(1, 3, 9, 9)
    with torch.inference_mode():
        assert torch.equal(ours(x), plain(x))
    assert routes == []
