"""Neighbourhood attention (NATTEN <= 0.15 semantics) against a brute-force reference, plus gradients, memory
and numerics of the memory-lean custom autograd Function."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nnunet_lmnet.architectures.neighborhood_attention as na_module
from nnunet_lmnet.architectures.neighborhood_attention import NeighborhoodAttention, neighborhood_attention


def _as_tuple(kernel, ndim):
    return (kernel,) * ndim if isinstance(kernel, int) else tuple(kernel)


def reference_na(q, k, v, kernel, rpb=None, scale=None):
    """Brute force, written from the definition: for every query i, every key j of its window
    [s, s + k) with s = clamp(i - k//2, 0, L - k), logit = q_i.k_j * scale + rpb[(j - i) + (k - 1)]."""
    spatial = tuple(q.shape[2:-1])
    kernel = _as_tuple(kernel, len(spatial))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    outputs = []
    for i in itertools.product(*(range(length) for length in spatial)):
        starts = [min(max(ii - kk // 2, 0), length - kk) for ii, kk, length in zip(i, kernel, spatial)]
        logits, values = [], []
        for j in itertools.product(*(range(s, s + kk) for s, kk in zip(starts, kernel))):
            logit = (q[(slice(None), slice(None), *i)] * k[(slice(None), slice(None), *j)]).sum(-1) * scale
            if rpb is not None:
                logit = logit + rpb[(slice(None), *(jj - ii + kk - 1 for ii, jj, kk in zip(i, j, kernel)))]
            logits.append(logit)
            values.append(v[(slice(None), slice(None), *j)])
        weights = torch.softmax(torch.stack(logits, -1), -1)  # (B, heads, prod(k))
        outputs.append((weights.unsqueeze(-1) * torch.stack(values, -2)).sum(-2))
    return torch.stack(outputs, 2).reshape(*q.shape[:-1], v.shape[-1])


def _qkv_rpb(batch, heads, spatial, head_dim, kernel, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kernel = _as_tuple(kernel, len(spatial))
    q, k, v = (torch.randn(batch, heads, *spatial, head_dim, generator=gen, dtype=dtype) for _ in range(3))
    rpb = torch.randn(heads, *(2 * kk - 1 for kk in kernel), generator=gen, dtype=dtype)
    return q, k, v, rpb


# (spatial, kernel): L == k, L == k + 1, non-square maps, anisotropic kernels, kernel 1 on an axis.
CASES = [
    ((3,), 3),
    ((4,), 3),
    ((9,), 5),
    ((3, 3), 3),
    ((4, 5), 3),
    ((5, 7), (3, 5)),
    ((6, 4), (5, 3)),
    ((4, 6), (1, 3)),
    ((3, 3, 3), 3),
    ((3, 4, 5), (1, 3, 3)),
    ((2, 4, 3), (1, 3, 3)),
    ((4, 3, 5), (3, 1, 5)),
]
# A cheaper subset for the float32 check: 1D, 2D anisotropic, 3D cubic and (1, 3, 3).
CASES_F32 = [CASES[i] for i in (1, 5, 6, 8, 9)]


@pytest.mark.parametrize("use_rpb", [True, False], ids=["rpb", "no_rpb"])
@pytest.mark.parametrize("spatial,kernel", CASES, ids=[f"{s}-k{k}" for s, k in CASES])
def test_matches_brute_force_float64_values_and_grads(spatial, kernel, use_rpb):
    q, k, v, rpb = _qkv_rpb(2, 3, spatial, 4, kernel, torch.float64)
    rpb = rpb if use_rpb else None
    inputs = [t.requires_grad_() for t in (q, k, v) + ((rpb,) if use_rpb else ())]

    out = neighborhood_attention(q, k, v, kernel, rpb)
    expected = reference_na(q, k, v, kernel, rpb)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)

    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    expected_grads = torch.autograd.grad(expected, inputs, grad_out)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


# Blocks of the kernel (see `_blocks`), in logits of one head: one head of one item, two heads, two whole items.
BLOCK_HEADS = {"per-head": 1, "two-heads": 2, "two-items": 6}


@pytest.mark.parametrize("block_heads", BLOCK_HEADS.values(), ids=BLOCK_HEADS)
@pytest.mark.parametrize("spatial,kernel", [((4, 5), 3), ((3, 4, 5), (1, 3, 3))], ids=["2d", "3d-aniso"])
def test_blockwise_kernel_equals_brute_force_float64(monkeypatch, spatial, kernel, block_heads):
    """Large maps run block by block over (batch items, head groups); every split gives the same values and grads."""
    monkeypatch.setattr(na_module, "_block_bytes", lambda: block_heads * 9 * math.prod(spatial) * 8)
    q, k, v, rpb = _qkv_rpb(3, 3, spatial, 2, kernel, torch.float64, seed=3)
    n_blocks = len(na_module._blocks(q.movedim(-1, 2), na_module._normalize_kernel(kernel, len(spatial)), 8))
    assert n_blocks > 1
    inputs = [t.requires_grad_() for t in (q, k, v, rpb)]
    out = neighborhood_attention(q, k, v, kernel, rpb)
    expected = reference_na(q, k, v, kernel, rpb)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    with torch.no_grad():  # the inference path keeps no attention weights, one block's in a scratch tensor
        assert torch.equal(neighborhood_attention(q, k, v, kernel, rpb), out)
    grad_out = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, inputs, grad_out), torch.autograd.grad(expected, inputs, grad_out)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_blocks_cover_every_batch_item_and_head_once(monkeypatch):
    q = torch.zeros(3, 5, 2, 4, 4)  # planar (B, heads, d, H, W); one head's logits: 9 * 16 * 4 bytes
    per_head = 9 * 16 * 4
    for block_bytes, expected in ((per_head * 2, 9), (per_head * 5, 3), (per_head * 10, 2), (10 ** 9, 1)):
        monkeypatch.setattr(na_module, "_block_bytes", lambda: block_bytes)
        blocks = na_module._blocks(q, (3, 3), 4)
        assert len(blocks) == expected
        covered = torch.zeros(3, 5, dtype=torch.int64)
        for b, h in blocks:
            covered[b, h] += 1
        assert torch.equal(covered, torch.ones(3, 5, dtype=torch.int64)), (block_bytes, blocks)


def test_block_budget_grows_with_intra_op_threads(monkeypatch):
    """Each block is hundreds of small kernels, each paying the start of a parallel region: with more threads
    the blocks are larger (fewer kernels), per thread the same size."""
    monkeypatch.setattr(na_module, "_BLOCK_BYTES", 9 * 16 * 4)  # one head's logits (planar 4x4 maps, 3x3 kernel)
    q = torch.zeros(2, 6, 1, 4, 4)
    for threads, expected in ((1, 12), (2, 6), (3, 4), (6, 2), (12, 1)):
        monkeypatch.setattr(na_module.torch, "get_num_threads", lambda t=threads: t)
        assert na_module._block_bytes() == threads * 9 * 16 * 4
        assert len(na_module._blocks(q, (3, 3), 4)) == expected, threads


@pytest.mark.parametrize("spatial,kernel", CASES_F32, ids=[f"{s}-k{k}" for s, k in CASES_F32])
def test_matches_brute_force_float32(spatial, kernel):
    q, k, v, rpb = _qkv_rpb(2, 3, spatial, 4, kernel, torch.float32, seed=1)
    out = neighborhood_attention(q, k, v, kernel, rpb, scale=0.3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference_na(q, k, v, kernel, rpb, scale=0.3), atol=1e-6, rtol=0)


def test_planar_views_as_inputs_give_same_result_and_are_not_modified():
    # NeighborhoodAttention passes (B, heads, *spatial, d) views of a (B, heads, d, *spatial) buffer, which the
    # kernel uses without copying; it must neither write into them nor behave differently.
    q, k, v, rpb = _qkv_rpb(2, 3, (5, 6), 4, 3, torch.float32, seed=4)
    views = [t.movedim(-1, 2).contiguous().movedim(2, -1).requires_grad_() for t in (q, k, v)]
    before = [t.detach().clone() for t in views]
    out = neighborhood_attention(*views, 3, rpb)
    out.square().sum().backward()
    for view, original in zip(views, before):
        assert torch.equal(view.detach(), original)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    expected = neighborhood_attention(*leaves, 3, rpb)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    for view, leaf in zip(views, leaves):
        torch.testing.assert_close(view.grad, leaf.grad, atol=0, rtol=0)


def test_border_windows_are_shifted_not_padded():
    # 1D, L == 4, k == 3: query 0 sees keys {0,1,2} (not {pad,0,1}) and query 3 sees {1,2,3}. With identical
    # keys the weights are uniform, so each output is the mean of exactly those values.
    v = torch.arange(4.0).view(1, 1, 4, 1)
    q = torch.zeros(1, 1, 4, 1)
    out = neighborhood_attention(q, torch.zeros_like(q), v, 3).flatten()
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0, 2.0, 2.0]))


# The full Jacobian check is used where it is cheap; the 3x3x3 cases use gradcheck's fast mode (random
# projections of the Jacobian). Exact agreement of all gradients with the brute force is tested above.
@pytest.mark.parametrize(
    "spatial,kernel,use_rpb,heads,fast",
    [
        ((5,), 3, True, 2, False),
        ((3, 4), 3, True, 1, False),
        ((3, 5), (3, 5), False, 1, False),  # L == k on both axes: every window is the whole map
        ((2, 3, 3), (1, 3, 3), True, 2, False),
        ((3, 3, 4), 3, True, 2, True),
        ((3, 4, 3), 3, False, 1, True),
    ],
)
def test_gradcheck(spatial, kernel, use_rpb, heads, fast):
    q, k, v, rpb = _qkv_rpb(1, heads, spatial, 2, kernel, torch.float64, seed=2)
    inputs = (q, k, v, rpb) if use_rpb else (q, k, v)
    inputs = tuple(t.requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(
        lambda *t: neighborhood_attention(*t[:3], kernel, *t[3:]), inputs, fast_mode=fast
    )


def _saved_numels(fn):
    """Run fn() and return the element counts of every tensor autograd saved for backward."""
    numels = []

    def pack(t):
        numels.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return numels


def _naive_unfold_na(q, k, v, kernel_size):
    """Plain autograd version that materialises all prod(k) neighbours of k and v at once."""
    spatial = q.shape[2:-1]
    index = torch.arange(q[0, 0, ..., 0].numel()).view(spatial)
    starts = [torch.clamp(torch.arange(length) - kernel_size // 2, 0, length - kernel_size) for length in spatial]
    rows = starts[0].view(-1, 1, 1, 1) + torch.arange(kernel_size).view(1, 1, -1, 1)
    cols = starts[1].view(1, -1, 1, 1) + torch.arange(kernel_size).view(1, 1, 1, -1)
    neighbours = index[rows, cols].reshape(-1, kernel_size**2)  # (N, prod(k))
    flat = lambda t: t.reshape(*t.shape[:2], -1, t.shape[-1])  # noqa: E731
    k_unf, v_unf = flat(k)[:, :, neighbours], flat(v)[:, :, neighbours]  # (B, heads, N, prod(k), d)
    attn = torch.softmax((flat(q).unsqueeze(-2) * k_unf).sum(-1) * q.shape[-1] ** -0.5, -1)
    return (attn.unsqueeze(-1) * v_unf).sum(-2).reshape(q.shape)


def test_saved_tensors_stay_below_unfold_bound():
    # Bound: q, k, v (3 * numel(q)) plus the attention weights (numel(q) / head_dim * prod(k)). An unfold
    # implementation keeps prod(k) copies of k and of v (2 * prod(k) * numel(q)), which exceeds it whenever
    # 2 * prod(k) > 3 + prod(k) / head_dim: here 18 > 7.5, so this check fails for such an implementation.
    kernel, head_dim = 3, 2
    q, k, v, rpb = _qkv_rpb(2, 3, (8, 8), head_dim, kernel, torch.float32)
    for t in (q, k, v, rpb):
        t.requires_grad_()
    bound = 3 * q.numel() + q.numel() // head_dim * kernel**2

    ours = _saved_numels(lambda: neighborhood_attention(q, k, v, kernel, rpb))
    naive = _saved_numels(lambda: _naive_unfold_na(q, k, v, kernel))
    assert sum(ours) <= bound, (ours, bound)
    assert sum(naive) > bound, (naive, bound)
    torch.testing.assert_close(neighborhood_attention(q, k, v, kernel), _naive_unfold_na(q, k, v, kernel))


def test_fp16_inputs_with_large_values_stay_finite():
    q, k, v, rpb = _qkv_rpb(1, 2, (5, 6), 8, 3, torch.float32, seed=3)
    q, k = q * 150, k * 150
    q16, k16, v16 = (t.half().requires_grad_() for t in (q, k, v))
    # Precondition: fp16 logits overflow, so the check below fails if logits are not computed in fp32.
    assert not torch.isfinite((q16 * k16).sum(-1)).all()

    out = neighborhood_attention(q16, k16, v16, 3, rpb)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    expected = reference_na(q16.double(), k16.double(), v16.double(), 3, rpb.double())
    torch.testing.assert_close(out.double(), expected, atol=2e-3, rtol=2e-3)
    out.float().square().sum().backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.dtype == torch.float16 for t in (q16, k16, v16))


def test_bf16_autocast_module_is_finite_and_close_to_fp32():
    torch.manual_seed(0)
    module = NeighborhoodAttention(16, 4, (1, 3, 3), spatial_dims=3)
    x = torch.randn(2, 2, 5, 6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
        out_large = module(x * 1000)  # logits far beyond what a bf16 softmax could take
    assert out.dtype == out_large.dtype == torch.bfloat16
    assert torch.isfinite(out).all() and torch.isfinite(out_large).all()
    out_large.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())
    # bf16 keeps ~3 significant digits; a wrong head split or a lost bias would be far off.
    torch.testing.assert_close(out.float(), module(x), atol=0.03, rtol=0.03)


# ---------------------------------------------------------------------------------------------- module


def _module_reference(module, x):
    """Module forward written out by hand: channel = head * head_dim + d, brute-force attention."""
    batch, spatial, _nd = x.shape[0], x.shape[1:-1], x.dim() - 2
    qkv = module.qkv(x).reshape(batch, *spatial, 3, module.num_heads, module.head_dim)
    q, k, v = (qkv[..., i, :, :].movedim(-2, 1) for i in range(3))  # (B, heads, *spatial, head_dim)
    out = reference_na(q, k, v, module.kernel_size, module.rpb)
    return module.proj(out.movedim(1, -2).reshape(batch, *spatial, module.dim))


@pytest.mark.parametrize(
    "dim,heads,kernel,spatial",
    [(12, 12, 3, (5, 4)), (16, 4, 3, (7,)), (8, 2, (1, 3, 3), (2, 3, 4)), (12, 3, (3, 5), (4, 6))],
)
def test_module_matches_hand_written_forward(dim, heads, kernel, spatial):
    torch.manual_seed(0)
    module = NeighborhoodAttention(dim, heads, kernel, spatial_dims=len(spatial))
    x = torch.randn(2, *spatial, dim)
    out = module(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _module_reference(module, x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("spatial,kernel", [((2, 5), 3), ((1, 2), 3), ((1, 2, 4), (1, 3, 3)), ((2,), 5)])
def test_module_pads_inputs_smaller_than_kernel(spatial, kernel):
    torch.manual_seed(0)
    module = NeighborhoodAttention(8, 2, kernel, spatial_dims=len(spatial))
    x = torch.randn(2, *spatial, 8)
    kernel = _as_tuple(kernel, len(spatial))
    pad = [0, 0]
    for length, kk in reversed(list(zip(spatial, kernel))):
        pad += [0, max(kk - length, 0)]
    padded = F.pad(x, pad)  # zeros at the end of every short axis, before the qkv projection
    crop = (slice(None), *(slice(0, length) for length in spatial))
    out = module(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _module_reference(module, padded)[crop], atol=1e-6, rtol=1e-5)


def test_module_parameter_count_matches_lmnet():
    module = NeighborhoodAttention(96, 12, 3, spatial_dims=2)
    assert module.qkv.weight.numel() + module.qkv.bias.numel() == 27_936
    assert sum(p.numel() for p in module.proj.parameters()) == 9_312
    assert module.rpb.shape == (12, 5, 5)
    assert sum(p.numel() for p in module.parameters()) == 37_548
    assert sum(p.numel() for p in NeighborhoodAttention(96, 12, 3, 2, rpb=False).parameters()) == 37_248
    assert NeighborhoodAttention(96, 12, 3, 2, qkv_bias=False).qkv.bias is None
    assert NeighborhoodAttention(12, 12, (1, 3, 3), 3).rpb.shape == (12, 1, 5, 5)
    # Kernels read from plans may be lists of numpy ints.
    assert NeighborhoodAttention(12, 12, [np.int64(1), np.int64(3), 3], 3).kernel_size == (1, 3, 3)


def test_rpb_init_is_trunc_normal_002():
    torch.manual_seed(0)
    rpb = NeighborhoodAttention(96, 12, (3, 3, 3), 3).rpb.detach()
    assert rpb.abs().max() > 0
    assert 0.017 < rpb.std().item() < 0.023


def test_module_backward_reaches_all_parameters():
    torch.manual_seed(0)
    module = NeighborhoodAttention(12, 12, 3, spatial_dims=2)  # head_dim 1, as in LM-Net's top level
    x = torch.randn(2, 6, 5, 12, requires_grad=True)
    module(x).square().sum().backward()
    for name, p in [("x", x), *module.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim=10, num_heads=3, kernel_size=3, spatial_dims=2), "divisible by num_heads"),
        (dict(dim=12, num_heads=3, kernel_size=4, spatial_dims=2), "odd"),
        (dict(dim=12, num_heads=3, kernel_size=(3, 3), spatial_dims=3), "expected 3"),
        (dict(dim=12, num_heads=3, kernel_size=3, spatial_dims=4), "spatial_dims"),
    ],
)
def test_module_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeighborhoodAttention(**kwargs)


def test_module_rejects_wrong_input_layout():
    module = NeighborhoodAttention(12, 3, 3, spatial_dims=2)
    with pytest.raises(ValueError, match="channels-last"):
        module(torch.randn(1, 12, 5, 5))  # channels-first
    with pytest.raises(ValueError, match="channels-last"):
        module(torch.randn(1, 5, 5, 5, 12))  # 3D map into a 2D module


def test_function_errors():
    q = torch.randn(1, 2, 4, 2, 3)
    with pytest.raises(ValueError, match=r"spatial size 2 on axis 1 is smaller than the kernel size 3"):
        neighborhood_attention(q, q, q, 3)
    q = torch.randn(1, 2, 4, 5, 3)
    with pytest.raises(ValueError, match=r"rpb must have shape \(2, 5, 5\)"):
        neighborhood_attention(q, q, q, 3, rpb=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="k must match"):
        neighborhood_attention(q, q[:, :, :3], q, 3)
    with pytest.raises(ValueError, match="share a dtype"):
        neighborhood_attention(q, q.double(), q, 3)
    with pytest.raises(ValueError, match="1-3 spatial axes"):
        neighborhood_attention(q[0, 0], q[0, 0], q[0, 0], 3)
    with pytest.raises(ValueError, match="odd"):
        neighborhood_attention(q, q, q, (3, 2))


@pytest.mark.parametrize("spatial", [(6, 7), (3, 6, 5)], ids=["2d", "3d"])
def test_batch_of_one_lays_out_qkv_as_the_general_permute(spatial):
    """A batch of one (nnU-Net's sliding window) lays q, k, v out by a 2-D transpose, larger batches by a permute:
    the same tensor, bit for bit."""
    qkv = torch.randn(1, *spatial, 3 * 4 * 2, dtype=torch.float64)
    fast = na_module._planar_qkv(qkv, 4, 2)
    general = na_module._planar_qkv(qkv, 4, 2, transpose_2d=False)
    assert fast.shape == (3, 1, 4, 2, *spatial) and fast.is_contiguous()
    assert torch.equal(fast, general)
    # channel c = part * 8 + head * 2 + d, as the module splits it
    assert torch.equal(general[1, 0, 3, 1], qkv[0, ..., 8 + 3 * 2 + 1])


@pytest.mark.parametrize("use_rpb", [True, False], ids=["rpb", "no_rpb"])
@pytest.mark.parametrize("spatial,kernel", CASES, ids=[f"{s}-k{k}" for s, k in CASES])
def test_export_form_matches_brute_force_float64(monkeypatch, spatial, kernel, use_rpb):
    """The form torch.export traces (one-hot grouped convolution + edge padding for the windows, whole-map
    softmax) computes the same function, border windows included; head_dim 1 (LM-Net's finest level) and 3."""
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    for head_dim in (1, 3):
        q, k, v, rpb = _qkv_rpb(2, 2, spatial, head_dim, kernel, torch.float64)
        out = neighborhood_attention(q, k, v, kernel, rpb if use_rpb else None)
        ref = reference_na(q, k, v, kernel, rpb if use_rpb else None)
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dim,heads,kernel,spatial",
                         [(12, 12, 3, (5, 4)), (8, 2, (1, 3, 3), (2, 3, 4)), (12, 3, (3, 5), (4, 6)), (6, 3, 3, (2, 5))])
def test_module_export_route_matches_eager_float64(monkeypatch, dim, heads, kernel, spatial):
    """NeighborhoodAttention's own export route (qkv to planar maps by one transpose, the export form, back by
    one transpose), padding of maps smaller than the kernel included, equals its eager forward."""
    torch.manual_seed(0)
    module = NeighborhoodAttention(dim, heads, kernel, spatial_dims=len(spatial)).double()
    x = torch.randn(3, *spatial, dim, dtype=torch.float64)
    with torch.no_grad():
        eager = module(x)
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
        exported = module(x)
    torch.testing.assert_close(exported, eager, atol=1e-13, rtol=1e-13)
