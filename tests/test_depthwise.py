"""The depthwise convolution's CPU training form equals PyTorch's convolution: outputs and all gradients.

Its backward takes other routes than autograd's (input gradient as a forward convolution, 3D kernels flat on some
axes as 2D convolutions on views, weight gradients from shifted chunks of padded copies), so every route is
checked in float64 against F.conv{2,3}d, for both memory layouts the networks use and for channel slices (LGMSNet
splits its channels into kernel groups).
"""
import pytest
import torch
import torch.nn.functional as F

from nnunet_lmnet.architectures.depthwise import _plane_mode, depthwise_conv, weight_grad

KERNELS_2D = [(3, 3), (5, 5), (3, 1), (1, 3), (5, 1), (1, 5), (7, 7), (9, 9), (3, 5), (5, 3)]
KERNELS_3D = [(3, 3, 3), (5, 5, 5), (3, 1, 1), (1, 3, 1), (1, 1, 3), (1, 3, 3), (1, 5, 5), (5, 1, 1), (1, 1, 5),
              (3, 3, 1), (1, 9, 9), (9, 9, 9), (3, 5, 7)]
LAYOUTS = {4: torch.channels_last, 5: torch.channels_last_3d}


def _maps(shape, layout, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=LAYOUTS[x.ndim])
    elif layout == "channel_slice":  # a non-contiguous view, as torch.split hands LGMSNet's kernel groups
        x = torch.cat([x, x], 1)[:, shape[1] // 2:shape[1] // 2 + shape[1]]
    return x


def _check(shape, kernel, layout, bias):
    channels = shape[1]
    x = _maps(shape, layout, 0).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    g = torch.Generator().manual_seed(1)
    w = torch.randn(channels, 1, *kernel, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(channels, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    w_ref = w.detach().clone().requires_grad_()
    b_ref = None if b is None else b.detach().clone().requires_grad_()
    padding = [k // 2 for k in kernel]
    y = depthwise_conv(x, w, b, padding)
    conv = F.conv2d if len(kernel) == 2 else F.conv3d
    y_ref = conv(x_ref, w_ref, b_ref, padding=padding, groups=channels)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # inference takes the same routes without autograd
        torch.testing.assert_close(depthwise_conv(x, w, b, padding), y_ref, rtol=1e-12, atol=1e-12)
    cotangent = _maps(y.shape, layout, 2)
    y.backward(cotangent)
    y_ref.backward(cotangent)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-12, atol=1e-11)
    if bias:
        torch.testing.assert_close(b.grad, b_ref.grad, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("kernel", KERNELS_2D)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_slice"])
def test_2d_equals_conv2d(kernel, layout):
    _check((2, 3, 11, 13), kernel, layout, bias=kernel == (3, 3))


@pytest.mark.parametrize("kernel", KERNELS_3D)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_slice"])
def test_3d_equals_conv3d(kernel, layout):
    _check((2, 3, 9, 10, 11), kernel, layout, bias=kernel == (1, 3, 3))


def test_map_as_small_as_the_kernel():
    _check((1, 2, 5, 5), (5, 5), "channels_last", bias=True)
    _check((3, 2, 3, 5, 5), (3, 5, 5), "channels_last", bias=False)


def test_flat_3d_kernels_run_on_2d_views_of_the_same_memory():
    x = torch.zeros(2, 4, 6, 7, 8).contiguous(memory_format=torch.channels_last_3d)
    assert _plane_mode(x, (3, 1, 1)) == "depth"
    assert _plane_mode(x, (1, 1, 3)) == "rows"
    assert _plane_mode(x, (1, 3, 3)) == "batch"
    assert _plane_mode(x, (3, 3, 3)) is None
    assert _plane_mode(x.contiguous(), (1, 3, 3)) is None  # NCDHW: (N*D, C, H, W) would need a copy


def test_weight_grad_of_a_wide_kernel_uses_chunks_of_the_fast_width(monkeypatch):
    import nnunet_lmnet.architectures.depthwise as dw

    widths = []
    native = dw._native_weight_grad

    def spy(grad, x, kernel, padding):
        widths.append(tuple(kernel))
        return native(grad, x, kernel, padding)

    monkeypatch.setattr(dw, "_native_weight_grad", spy)
    x = torch.randn(2, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    weight_grad(torch.randn_like(x), x, (5, 5))
    assert widths == [(5, 3), (5, 3)]  # columns 0-2 and 2-4
    widths.clear()
    x3 = torch.randn(1, 3, 6, 7, 8).contiguous(memory_format=torch.channels_last_3d)
    weight_grad(torch.randn_like(x3), x3, (3, 3, 3))
    assert widths == [(3, 3)] * 3  # one 2D weight gradient per depth offset


@pytest.mark.parametrize("kernel", [(5, 5, 5), (1, 3, 3), (3, 1, 5)])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_export_form_of_3d_equals_conv3d_float64(monkeypatch, kernel, with_bias):
    """What torch.export traces for a 3D depthwise conv (one 2D depthwise conv per kernel depth slice over
    (B, C * D, H, W), summed) is the same function; a depth as small as the kernel included."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 1, *kernel, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, generator=gen, dtype=torch.float64) if with_bias else None
    padding = [k // 2 for k in kernel]
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    for shape in [(2, 3, 6, 7, 9), (1, 3, kernel[0], 5, 5)]:
        x = torch.randn(*shape, generator=gen, dtype=torch.float64)
        ref = F.conv3d(x, weight, bias, padding=padding, groups=3)
        torch.testing.assert_close(depthwise_conv(x, weight, bias, padding), ref, atol=1e-12, rtol=1e-12)
