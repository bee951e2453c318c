"""End to end through the real nnUNetv2_* commands on tiny generated datasets (CPU, 2-iteration trainers).

2D: the demo pipeline (plan/preprocess, train with -tr, predict, evaluate) with LM-Net. 3D: anisotropic 3d_fullres
for both networks, and derive-plans --gpu-memory-target from that dataset's real fingerprint. The rest of nnU-Net's
lifecycle (LGMSNet on the 2D demo dataset, --val, --c, the cascade, find_best_configuration, ensembling,
postprocessing, the plans route, DDP) is in test_lifecycle.py.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_env import E2E_TRAINERS
from nnunet_lmnet.nnunet_commands import run

pytestmark = pytest.mark.e2e

NETWORK_CLASSES = {"lmnet": "nnunet_lmnet.architectures.lmnet.LMNet",
                   "lgmsnet": "nnunet_lmnet.architectures.lgmsnet.LGMSNet"}
TRAINERS = E2E_TRAINERS


def _model_folder(env, dataset, trainer, cfg, plans="nnUNetPlans"):
    return next(Path(env["nnUNet_results"]).glob(dataset)) / f"{trainer}__{plans}__{cfg}"


def _check_model(model: Path, arch: str, trainer: str, cfg: str) -> dict:
    plans = json.loads((model / "plans.json").read_text())
    architecture = plans["configurations"][cfg]["architecture"]
    assert architecture["network_class_name"] == NETWORK_CLASSES[arch]
    ckpt = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == trainer
    assert (model / "fold_0" / "validation" / "summary.json").is_file()
    return ckpt


def test_demo_pipeline_lmnet(demo_2d, capsys):
    root, env, summary = demo_2d
    preds = sorted(p.name for p in (root / "predictions").glob("*.png"))
    assert preds == ["synth_010.png", "synth_011.png"]
    from PIL import Image

    for p in preds:
        seg = np.array(Image.open(root / "predictions" / p))
        assert seg.shape == (64, 64) and set(np.unique(seg)) <= {0, 1, 2}
    assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0
    model = _model_folder(env, "Dataset980_*", TRAINERS["lmnet"], "2d")
    ckpt = _check_model(model, "lmnet", TRAINERS["lmnet"], "2d")
    # The checkpoint is in training form (branches present) and loads into the DS-off inference network.
    assert any(".branches.axial0." in k for k in ckpt["network_weights"])
    strides = json.loads((model / "plans.json").read_text())["configurations"]["2d"]["architecture"]["arch_kwargs"][
        "strides"]
    assert len(strides) == 5


@pytest.mark.parametrize("arch", ["lmnet", "lgmsnet"])
def test_3d_fullres_anisotropic(preprocessed_3d, trained_3d, arch):
    root, env = preprocessed_3d
    trainer = TRAINERS[arch]
    plans = json.loads(next(Path(env["nnUNet_preprocessed"]).glob("Dataset981_*/nnUNetPlans.json")).read_text())
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"][1][0] == 1  # anisotropic
    trained_3d(arch)
    out = root / f"pred_{arch}"
    raw = next(Path(env["nnUNet_raw"]).glob("Dataset981_*"))
    run("nnUNetv2_predict", "-i", raw / "imagesTs", "-o", out, "-d", "981", "-c", "3d_fullres", "-f", "0", "-tr",
        trainer, "-device", "cpu", "-npp", "0", "-nps", "0", env=env, quiet=True)
    import SimpleITK as sitk

    pred = sitk.ReadImage(str(out / "synth_006.nii.gz"))
    ref = sitk.ReadImage(str(raw / "imagesTs" / "synth_006_0000.nii.gz"))
    assert pred.GetSize() == ref.GetSize() and pred.GetSpacing() == pytest.approx(ref.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2}
    model = _model_folder(env, "Dataset981_*", trainer, "3d_fullres")
    _check_model(model, arch, trainer, "3d_fullres")


def test_budget_plans_from_the_real_fingerprint(preprocessed_3d, monkeypatch):
    """derive-plans --gpu-memory-target on a dataset nnUNetv2_plan_and_preprocess made (fingerprint, plans, data)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_lmnet.cli import main
    from nnunet_lmnet.training.network_builder import build_network

    _, env = preprocessed_3d
    for k, v in env.items():
        if k.startswith("nnUNet_"):
            monkeypatch.setenv(k, v)
    assert main(["derive-plans", "-d", "981", "--arch", "lmnet", "--gpu-memory-target", "8"]) == 0
    folder = next(Path(env["nnUNet_preprocessed"]).glob("Dataset981_*"))
    source = json.loads((folder / "nnUNetPlans.json").read_text())
    pm = PlansManager(str(folder / "nnUNetPlans_LMNet_8G.json"))
    assert pm.plans_name == "nnUNetPlans_LMNet_8G"
    for name in source["configurations"]:
        cm = pm.get_configuration(name)
        assert cm.data_identifier == source["configurations"][name]["data_identifier"]
        if name == "3d_fullres":  # the one configuration the fixture preprocessed: the data it will train on
            assert (folder / cm.data_identifier).is_dir()
        net = build_network("lmnet", cm, 1, 3, enable_deep_supervision=False).eval()
        with torch.no_grad():  # our network runs at the planned patch
            assert net(torch.randn(1, 1, *cm.patch_size)).shape == (1, 3, *cm.patch_size)
