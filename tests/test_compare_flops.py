"""Parameter and MAC counting (benchmark/complexity.py), directly and through `compare --flops`."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from nnunet_lmnet.benchmark.complexity import count_macs, count_parameters_in_state_dict, model_macs
from nnunet_lmnet.cli import main
from test_compare_support import DATASET, setup_env, write_real_model, write_summary


def _hand_macs(net, shape) -> int:
    """Independent count: conv MACs = output values x (C_in / groups) x kernel volume; transposed conv:
    input values x (C_out / groups) x kernel volume."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = math.prod(mod.kernel_size)
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):
            total += inp[0].numel() * (mod.out_channels // mod.groups) * k
        else:
            total += out.numel() * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    with torch.no_grad():
        net.eval()(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total


@pytest.fixture
def real_model(tmp_path, monkeypatch):
    roots = setup_env(monkeypatch, tmp_path)
    folder = roots["nnUNet_results"] / DATASET / "nnUNetTrainer__nnUNetPlans__2d"
    net = write_real_model(folder, folds=(0,))
    write_summary(folder / "fold_0" / "validation" / "summary.json", {"a": {1: 0.9, 2: 0.8}, "b": {1: 0.7, 2: 0.6}})
    return roots, folder, net


def test_macs_of_rebuilt_network_match_hand_count(real_model):
    _, folder, net = real_model
    macs, shape = model_macs(folder, 0)
    assert shape == (1, 1, 32, 32)
    # stage convs 1->4 @32^2 and 4->8 s2 @16^2, transposed conv 8->4 k2, decoder conv 8->4 @32^2, 1x1 head 4->3
    assert macs == _hand_macs(net, shape) == 36864 + 73728 + 32768 + 294912 + 12288


def test_parameter_count_excludes_bn_buffers_and_shared_weights(real_model):
    _, folder, net = real_model
    sd = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    sd = sd["network_weights"]
    assert any(k.endswith("running_var") for k in sd) and any(k.startswith("decoder.encoder.") for k in sd)
    assert count_parameters_in_state_dict(sd) == sum(p.numel() for p in net.parameters())
    independent = {k: v.clone() for k, v in sd.items()}  # no shared storage: every key counts
    expected = sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var",
                                                                          "num_batches_tracked")))
    assert count_parameters_in_state_dict(independent) == expected


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):  # x: (1, 16, 8)
        y = self.mha(x, x, x, need_weights=False)[0]
        q = x.view(1, 16, 2, 4).transpose(1, 2)
        z = nn.functional.scaled_dot_product_attention(q, q, q)  # fused CPU kernel
        w = torch.softmax(x @ x.transpose(1, 2), -1) @ x  # hand-written attention
        return y + z.transpose(1, 2).reshape(1, 16, 8) + w


def test_attention_is_counted():
    fastpath = torch.backends.mha.get_fastpath_enabled()
    macs = count_macs(_Attention(), (1, 16, 8))
    mha = 4 * 16 * 8 * 8 + 2 * 16 * 16 * 8  # q, k, v, out projections + QK^T and AV
    sdpa = 2 * 2 * 16 * 16 * 4              # two heads of dim 4
    manual = 2 * 16 * 16 * 8
    assert macs == mha + sdpa + manual
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


class _ShiftedProducts(nn.Module):
    """Products written as element-wise multiplies: invisible to the counter unless declared."""

    def __init__(self, declare: bool):
        super().__init__()
        self.declare = declare
        self.proj = nn.Linear(4, 4, bias=False)

    def forward(self, x):  # x: (1, 10, 4)
        return self.proj(x) + (x * x.roll(1, dims=1)).sum(-1, keepdim=True)

    def extra_macs(self, inputs, output):
        return inputs[0].numel() if self.declare else 0


def test_extra_macs_hook():
    assert count_macs(_ShiftedProducts(declare=False), (1, 10, 4)) == 10 * 4 * 4
    assert count_macs(_ShiftedProducts(declare=True), (1, 10, 4)) == 10 * 4 * 4 + 40


def test_compare_with_flops(real_model, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer", "-f", "0", "--flops", "--out", str(out),
                 "--no-plot"]) == 0
    summary = pd.read_csv(out / "comparison.csv", dtype={"class": str})
    assert set(summary["macs"]) == {450560} and set(summary["flops"]) == {901120}
    md = (out / "comparison.md").read_text()
    assert "| `nnUNetTrainer` | 1/1 (0) | none | 807 | 450.56 k | 901.12 k | 1×32×32 |" in md
    assert "attention counted as its QK^T and AV products" in md


@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised by modules nnU-Net imports while searching trainers
def test_flops_for_an_unknown_trainer_says_how_to_register(tmp_path, monkeypatch, capsys):
    roots = setup_env(monkeypatch, tmp_path)
    folder = roots["nnUNet_results"] / DATASET / "nnUNetTrainerNotInstalled__nnUNetPlans__2d"
    write_real_model(folder, folds=(0,), trainer="nnUNetTrainerNotInstalled")
    write_summary(folder / "fold_0" / "validation" / "summary.json", {"a": {1: 0.9}})
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainerNotInstalled", "-f", "0", "--flops",
                 "--no-plot", "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert 'export nnUNet_extTrainer="$(nnunet-lmnet trainer-path)"' in err
    assert "nnUNetTrainerNotInstalled" in err


def test_convolutions_that_call_onednn_directly_are_counted():
    """Our networks' CPU inference convs call torch.mkldnn_convolution (architectures/dense_conv.py), an op the
    counter's table does not have."""
    from nnunet_lmnet.architectures.dense_conv import Conv3d

    net = nn.Sequential(Conv3d(4, 16, 3, padding=1), Conv3d(16, 8, 1), Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1)))
    shape = (1, 4, 6, 8, 8)
    assert count_macs(net, shape) == _hand_macs(net, shape) == 384 * (16 * 4 * 27 + 8 * 16 + 8 * 8 * 9)
