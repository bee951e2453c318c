"""``nnunet-lmnet info``: the paper presets' parameters, MACs (training form and fused) and output shape."""
import json

import pytest
import torch

from nnunet_lmnet.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _info(capsys, *args) -> dict:
    assert main(["info", *args, "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    return json.loads(last)


def test_lmnet_2d_paper_preset(capsys):
    r = _info(capsys, "--arch", "lmnet", "--dim", "2", "--in-channels", "3", "--classes", "2", "--patch", "64", "64")
    assert set(r) == {"arch", "dim", "params", "params_deploy", "macs", "macs_deploy", "output_shape"}
    assert (r["arch"], r["dim"]) == ("lmnet", 2)
    assert r["params"] == 3_966_566 and r["params_deploy"] == 3_934_886
    assert r["output_shape"] == [1, 2, 64, 64]
    # Fusion removes exactly the 3x3, 3x1 and 1x3 depthwise branches (15 MACs per expanded channel and pixel) of the
    # 16 blocks: 2 blocks x (encoder + decoder) at each of the 4 levels, expanded width 24 * 2^i at (64 / 2^i)^2.
    removed = sum(2 * 2 * 15 * 24 * 2 ** i * (64 // 2 ** i) ** 2 for i in range(4))
    assert r["macs"] - r["macs_deploy"] == removed


def test_lmnet_3d_anisotropic_patch_and_text_output(capsys):
    assert main(["info", "--arch", "lmnet", "--dim", "3", "--in-channels", "1", "--classes", "4",
                 "--patch", "16", "32", "48"]) == 0
    out = capsys.readouterr().out
    assert "parameters (training form)" in out and "output shape:" in out and "[1, 4, 16, 32, 48]" in out
    assert not out.strip().splitlines()[-1].startswith("{")  # JSON only with --json


@pytest.mark.parametrize("dim, cin, classes, patch, params", [
    (2, 3, 2, ["64", "64"], 2_321_410),
    (3, 1, 14, ["32", "32", "32"], 6_193_742),
])
def test_lgmsnet_paper_presets(capsys, dim, cin, classes, patch, params):
    r = _info(capsys, "--arch", "lgmsnet", "--dim", str(dim), "--in-channels", str(cin), "--classes", str(classes),
              "--patch", *patch)
    assert r["params"] == r["params_deploy"] == params
    assert r["macs"] == r["macs_deploy"] > 0
    assert r["output_shape"] == [1, classes, *map(int, patch)]


@pytest.mark.parametrize("patch, message", [(["64"], "needs 2 sizes"), (["64", "40"], "not divisible")])
def test_bad_patch_is_a_clear_error(capsys, patch, message):
    assert main(["info", "--arch", "lmnet", "--dim", "2", "--in-channels", "1", "--classes", "2",
                 "--patch", *patch]) == 2
    assert message in capsys.readouterr().err
