"""The networks' function pinned to seeded float64 references, and their per-level geometry on anisotropic plans.

``tests/reference/*.pt`` were computed by ``tests/reference/make_reference.py`` from a frozen copy of the networks
(commit b3e987b, the official networks' function). Here the *current* package runs the same procedure
(``reference_procedure.run``) with the stored kwargs, state and input: eval output, seeded train outputs,
input and parameter gradients and BatchNorm running statistics must agree to 1e-10 in float64. Speed or memory
changes (recomputation, fused kernels) may reorder float64 rounding (~1e-14) but must not change the function.
Boolean constructor flags added after the reference (e.g. ``recompute``) are run with both values.
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path

import pytest
import torch

import reference_procedure as rp
from nnunet_lmnet.architectures.lgmsnet import LGMSNet
from nnunet_lmnet.architectures.lmnet import LMNet
from nnunet_lmnet.plans.derive import derive_architecture
from synthetic_plans import default_configuration

REFERENCE_DIR = Path(__file__).parent / "reference"
CLASSES = {"lmnet": LMNet, "lgmsnet": LGMSNet}
TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: threads only add overhead (and spin on a busy machine). One thread also gives the
    generator's reduction order, though the tolerance holds with others too (noise <= 1e-2 of it at 4 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _record(case: str) -> dict:
    return torch.load(REFERENCE_DIR / f"{case}.pt", weights_only=True)


def _new_bool_flags(case: str) -> dict[str, bool]:
    """Boolean kwargs of the current constructor that the reference constructor did not have, with defaults."""
    if not (REFERENCE_DIR / f"{case}.pt").exists():
        return {}  # test_a_reference_file_per_case reports it; collection must not fail
    record = _record(case)
    params = inspect.signature(CLASSES[record["network"]]).parameters
    return {name: p.default for name, p in params.items()
            if name not in record["reference_parameters"] and isinstance(p.default, bool)}


def _variants() -> list:
    """Every case as stored, plus once per new boolean flag with its non-default value."""
    out = []
    for case in rp.CASES:
        out.append(pytest.param(case, (), id=case))
        for flag, default in _new_bool_flags(case).items():
            out.append(pytest.param(case, ((flag, not default),), id=f"{case}-{flag}={not default}"))
    return out


VARIANTS = _variants()


def _build(case: str, overrides: tuple = ()) -> torch.nn.Module:
    record = _record(case)
    net = CLASSES[record["network"]](**record["kwargs"], **dict(overrides)).double()
    net.load_state_dict(rp.unpack_state(record), strict=True)
    return net


@functools.cache
def _current(case: str, overrides: tuple) -> dict:
    """The pinned procedure on the current package (cached: the tests below each check one part of it)."""
    record = _record(case)
    assert record["input"].dtype == torch.float64
    return rp.run(_build(case, overrides), record["input"])


def test_a_reference_file_per_case():
    assert sorted(p.stem for p in REFERENCE_DIR.glob("*.pt")) == sorted(rp.CASES)
    for case, spec in rp.CASES.items():
        record = _record(case)
        assert record["format_version"] == rp.FORMAT_VERSION
        assert record["kwargs"] == spec["kwargs"], f"{case}: CASES changed since the references were made"
        assert tuple(record["input"].shape) == spec["input_shape"]


@pytest.mark.parametrize("case", rp.CASES)
def test_state_dict_layout_is_unchanged(case):
    """Same entries, shapes and parameter/buffer split as the reference (old checkpoints still load)."""
    net = _build(case)
    layout = rp.layout_of(_record(case))
    params = {n for n, _ in net.named_parameters()}
    assert {n: list(t.shape) for n, t in net.state_dict().items()} == {e[0]: e[1] for e in layout}
    assert params == {e[0] for e in layout if e[2] == "p"}


@pytest.mark.parametrize("case, overrides", VARIANTS)
def test_eval_output(case, overrides):
    torch.testing.assert_close(_current(case, overrides)["eval_output"], _record(case)["eval_output"], **TOL)


@pytest.mark.parametrize("case, overrides", VARIANTS)
def test_train_outputs_with_deep_supervision(case, overrides):
    actual, expected = _current(case, overrides)["train_outputs"], _record(case)["train_outputs"]
    assert [t.shape for t in actual] == [t.shape for t in expected]
    torch.testing.assert_close(actual, expected, **TOL)


@pytest.mark.parametrize("case, overrides", VARIANTS)
def test_input_gradient(case, overrides):
    torch.testing.assert_close(_current(case, overrides)["input_grad"], _record(case)["input_grad"], **TOL)


@pytest.mark.parametrize("case, overrides", VARIANTS)
def test_parameter_gradients(case, overrides):
    # whole gradient for small parameters, [norm, fixed weighted sum, 4 entries] for the others
    torch.testing.assert_close(_current(case, overrides)["param_grads"], rp.unpack_param_grads(_record(case)),
                               **TOL)


@pytest.mark.parametrize("case, overrides", VARIANTS)
def test_running_statistics_after_one_step(case, overrides):
    """One train step updates every BatchNorm exactly once (recomputation in backward must not update it again)."""
    expected = rp.unpack_buffers(_record(case))
    current = _current(case, overrides)
    torch.testing.assert_close(current["buffers_after_forward"], expected, **TOL)
    torch.testing.assert_close(current["buffers_after_backward"], expected, **TOL)


# ---- per-level geometry on anisotropic plans -------------------------------------------------------------------

FLAT = (1, 3, 3)
FULL = (3, 3, 3)
# LM-Net's depthwise branches per plan kernel (multibranch_block docstring: 5 where K is 3, K, one 1-D 3 per axis)
LMNET_BRANCHES = {
    FLAT: {"large": (1, 5, 5), "square": (1, 3, 3), "axial1": (1, 3, 1), "axial2": (1, 1, 3)},
    FULL: {"large": (5, 5, 5), "square": (3, 3, 3), "axial0": (3, 1, 1), "axial1": (1, 3, 1), "axial2": (1, 1, 3)},
}
LMNET_WINDOW = {FLAT: (1, 3, 3), FULL: (3, 3, 3)}  # neighbourhood attention: 3 only where the plan kernel is 3

# A 7-stage nnU-Net plan for strongly anisotropic data; its first 5 stages differ from its last 5 (3 vs 1 flat).
PLAN7_STRIDES = [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]
PLAN7_KERNELS = [[1, 3, 3], [1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]


def _kernel(conv) -> tuple[int, ...]:
    return tuple(conv.weight.shape[2:])


def _check_lmnet_levels(net: LMNet, strides, kernels) -> None:
    n = len(kernels)
    assert [tuple(s) for s in net.strides] == [tuple(s) for s in strides]
    for i in range(n - 1):
        k = tuple(kernels[i])
        for where, stage in (("encoder", net.encoder_stages[i]), ("decoder", net.decoder.blocks[i])):
            for block in stage:
                shapes = {name: tuple(b.conv.weight.shape[2:]) for name, b in block.branches.items()}
                assert shapes == LMNET_BRANCHES[k], f"{where} level {i} (plan kernel {k})"
                assert all(b.conv.weight.shape[1] == 1 for b in block.branches.values())  # depthwise
        attn = net.lft[i].transformer.layer.attn
        assert attn.kernel_size == LMNET_WINDOW[k], f"LFT window of level {i} (plan kernel {k})"
        assert tuple(attn.rpb.shape[1:]) == tuple(2 * w - 1 for w in LMNET_WINDOW[k])
        assert _kernel(net.lft[i].pyramid.same) == k and _kernel(net.lft[i].transformer.embed) == k
        assert _kernel(net.decoder.up[i]) == k
    for i in range(1, n):
        assert _kernel(net.downsample[i - 1]) == tuple(kernels[i])
        assert net.downsample[i - 1].stride == tuple(strides[i])
    assert _kernel(net.gft.embed) == tuple(kernels[-1])


def _lgms_level_convs(net: LGMSNet, level: int) -> list:
    mods = list(net.encoder[level].modules())
    if level < len(net.decoder.stages):
        mods += list(net.decoder.stages[level].modules())
    if level == 0:
        mods += list(net.stem.modules())
    return [m for m in mods if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]


def _check_lgmsnet_levels(net: LGMSNet, strides, kernels) -> None:
    n = len(kernels)
    assert [tuple(s) for s in net.strides] == [tuple(s) for s in strides]
    for level in range(n):
        k = tuple(kernels[level])
        flat = [a for a, v in enumerate(k) if v == 1]
        convs = _lgms_level_convs(net, level)
        assert convs
        for conv in convs:  # nothing convolves across a flat axis of this level
            assert all(_kernel(conv)[a] == 1 for a in flat), f"level {level} (plan kernel {k}): {conv}"
        full = [a for a, v in enumerate(k) if v == 3]
        enc = net.encoder[level]
        if max(strides[level]) > 1:
            assert tuple(enc.pool.kernel_size) == tuple(strides[level])
        if level < 3:  # LMS: depthwise 3/5/7/9 on the level's full axes, 3x3 expand
            lms = enc.block.lms
            assert [_kernel(c) for c in lms.depthwise] == [tuple(s if a in full else 1 for a in range(3))
                                                           for s in (3, 5, 7, 9)], f"LMS level {level}"
            assert _kernel(lms.expand[0]) == k
        else:  # GMS: 3x3 conv1 / conv4 and depthwise branch
            for conv in (enc.block.conv1[0], enc.block.conv4[0], enc.block.local.body[0]):
                assert _kernel(conv) == k, f"GMS level {level}"
        if level < n - 1:
            assert _kernel(net.decoder.stages[level].up.conv[0]) == k
    assert _kernel(net.stem[0]) == tuple(kernels[0])


def test_lmnet_per_level_geometry_on_an_anisotropic_plan():
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    kernels = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    net = LMNet(1, 2, True, features_per_stage=[2, 2, 4, 4, 8], lft_heads=2, gft_heads=4, strides=strides,
                kernel_sizes=kernels)
    _check_lmnet_levels(net, strides, kernels)


def test_lgmsnet_per_level_geometry_on_an_anisotropic_plan():
    strides = [[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2], [2, 2, 2]]
    kernels = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [1, 3, 3], [3, 3, 3]]  # a flat GMS level too
    net = LGMSNet(1, 2, True, features_per_stage=[4, 4, 4, 4, 8], attention_heads=2, head_dim=4, strides=strides,
                  kernel_sizes=kernels)
    _check_lgmsnet_levels(net, strides, kernels)


@pytest.mark.parametrize("arch", ["lmnet", "lgmsnet"])
def test_preset_takes_the_plans_first_stages(arch):
    """7 plan stages, 5-stage preset: the network gets the kernels and strides of stages 0..4."""
    default_block = default_configuration(PLAN7_STRIDES, PLAN7_KERNELS, (16, 128, 128))["architecture"]
    derived = derive_architecture(arch, default_block)
    kwargs = derived["arch_kwargs"]
    assert kwargs["kernel_sizes"] == PLAN7_KERNELS[:5]
    assert kwargs["strides"] == PLAN7_STRIDES[:5]
    assert derived["network_class_name"] == f"{CLASSES[arch].__module__}.{CLASSES[arch].__name__}"
    net = CLASSES[arch](1, 2, True, **kwargs)
    check = _check_lmnet_levels if arch == "lmnet" else _check_lgmsnet_levels
    check(net, PLAN7_STRIDES[:5], PLAN7_KERNELS[:5])
