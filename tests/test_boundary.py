"""HD95 / NSD from validation predictions (MONAI), through `compare --boundary` and directly."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("monai")
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from monai.metrics import compute_surface_dice  # noqa: E402

from nnunet_lmnet.evaluation.boundary import mask_boundary_metrics, to_evaluation_geometry  # noqa: E402
from nnunet_lmnet.cli import main  # noqa: E402
from test_compare_support import DATASET, dataset_json, setup_env, tiny_plans, write_summary  # noqa: E402

SHAPE = (10, 12, 12)          # z, y, x
SITK_SPACING = (1.0, 1.0, 3.0)  # x, y, z as SimpleITK writes it -> array spacing (3, 1, 1)


def _save(arr, path):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(SITK_SPACING)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def _cube(label, lo=2, hi=6):
    a = np.zeros(SHAPE, np.uint8)
    a[lo:hi, lo:hi, lo:hi] = label
    return a


def _cases():
    """{case: (reference, prediction of nnUNetTrainer)}; nnUNetTrainerLMNet predicts the reference exactly."""
    plane3 = np.zeros(SHAPE, np.uint8)
    plane3[3] = 1
    plane4 = np.zeros(SHAPE, np.uint8)
    plane4[4] = 1
    cube1 = _cube(1)
    both = cube1.copy()
    both[7:9, 7:10, 7:10] = 2
    return {
        "case_a": (plane3, plane4),  # label 1 one slice (3 mm) apart; label 2 empty in both
        "case_b": (both, cube1),     # label 1 identical; label 2 missing in the prediction
        "case_c": (cube1, both),     # label 1 identical; label 2 only in the prediction
    }


@pytest.fixture
def boundary_setup(tmp_path, monkeypatch):
    roots = setup_env(monkeypatch, tmp_path)
    gt = roots["nnUNet_preprocessed"] / DATASET / "gt_segmentations"
    cases = _cases()
    for case, (ref, _) in cases.items():
        _save(ref, gt / f"{case}.nii.gz")
    for trainer in ("nnUNetTrainer", "nnUNetTrainerLMNet"):
        folder = roots["nnUNet_results"] / DATASET / f"{trainer}__nnUNetPlans__3d_fullres"
        folder.mkdir(parents=True)
        (folder / "dataset.json").write_text(json.dumps(dataset_json()))
        plans = tiny_plans((8, 8, 8), configuration="3d_fullres", norm="InstanceNorm3d")
        (folder / "plans.json").write_text(json.dumps(plans))
        val = folder / "fold_0" / "validation"
        for case, (ref, pred) in cases.items():
            _save(pred if trainer == "nnUNetTrainer" else ref, val / f"{case}.nii.gz")
        # Dice values are irrelevant here; the boundary metrics come from the image files
        write_summary(val / "summary.json", {c: {1: 0.9, 2: 0.5} for c in cases}, pred_folder=str(val))
    return roots


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notice in the direct call below
def test_compare_boundary_metrics(boundary_setup, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "-d", "42", "-c", "3d_fullres", "-tr", "nnUNetTrainer", "nnUNetTrainerLMNet", "-f", "0",
                 "--boundary", "--nsd-tolerance", "2", "--out", str(out), "--no-plot"])
    assert code == 0, capsys.readouterr().err
    per_case = pd.read_csv(out / "per_case.csv", dtype={"class": str}).set_index(["trainer", "case", "class"])

    # label 1 of case_a: planes one slice apart along z with 3 mm slices -> HD95 = 3 mm exactly
    # (a spacing in the wrong axis order would give 1 mm)
    assert per_case.loc[("nnUNetTrainer", "case_a", "1"), "HD95"] == pytest.approx(3.0)
    assert per_case.loc[("nnUNetTrainer", "case_b", "1"), "HD95"] == pytest.approx(0.0)
    assert per_case.loc[("nnUNetTrainer", "case_b", "1"), "NSD"] == pytest.approx(1.0)
    # NSD of case_a equals MONAI's own result on the same arrays with the array-order spacing
    ref, pred = _cases()["case_a"]
    expected = compute_surface_dice(torch.from_numpy(pred == 1)[None, None].float(),
                                    torch.from_numpy(ref == 1)[None, None].float(), [2.0],
                                    include_background=True, spacing=[3.0, 1.0, 1.0], use_subvoxels=True)
    assert per_case.loc[("nnUNetTrainer", "case_a", "1"), "NSD"] == pytest.approx(float(expected))
    assert per_case.loc[("nnUNetTrainer", "case_a", "1"), "NSD"] < 1
    # empty classes: both empty -> NaN; one side empty -> HD95 NaN, NSD 0
    r = per_case.loc[("nnUNetTrainer", "case_a", "2")]
    assert math.isnan(r["HD95"]) and math.isnan(r["NSD"]) and r["boundary_status"] == "both_empty"
    r = per_case.loc[("nnUNetTrainer", "case_b", "2")]
    assert math.isnan(r["HD95"]) and r["NSD"] == 0 and r["boundary_status"] == "pred_empty"
    assert per_case.loc[("nnUNetTrainer", "case_c", "2"), "boundary_status"] == "ref_empty"
    # the perfect trainer
    assert per_case.loc[("nnUNetTrainerLMNet", "case_a", "1"), "HD95"] == pytest.approx(0.0)
    assert per_case.loc[("nnUNetTrainerLMNet", "case_b", "2"), "NSD"] == pytest.approx(1.0)

    summary = pd.read_csv(out / "comparison.csv", dtype={"class": str})
    s = summary.set_index(["trainer", "metric", "class"])
    assert s.loc[("nnUNetTrainer", "HD95", "1"), "fold_0"] == pytest.approx(1.0)  # mean of 3, 0, 0
    assert math.isnan(s.loc[("nnUNetTrainer", "HD95", "2"), "fold_0"])  # undefined in every case
    assert s.loc[("nnUNetTrainer", "NSD", "2"), "fold_0"] == pytest.approx(0.0)  # 0, 0; both-empty excluded
    assert s.loc[("nnUNetTrainerLMNet", "NSD", "2"), "fold_0"] == pytest.approx(1.0)

    paired = pd.read_csv(out / "paired_tests.csv", dtype={"class": str}).set_index(["metric", "class"])
    assert paired.loc[("HD95", "1"), "n"] == 3
    assert paired.loc[("HD95", "1"), "median_diff"] == pytest.approx(0.0)
    assert paired.loc[("HD95", "1"), "mean_diff"] == pytest.approx(-1.0)
    # label 2: NaN (both empty) in case_a for both trainers and in case_c for the perfect one -> one pair left
    assert paired.loc[("NSD", "2"), "n"] == 1 and paired.loc[("NSD", "2"), "n_excluded"] == 2

    md = (out / "comparison.md").read_text()
    assert "## HD95 [mm] (lower is better) — mean ± std over folds" in md
    assert "## NSD at 2 mm — mean ± std over folds" in md
    assert "| `nnUNetTrainer` | tumor (2) | 1 | 1 | 1 |" in md  # both empty, prediction empty, reference empty


def test_boundary_needs_references(boundary_setup, tmp_path, capsys):
    gt = boundary_setup["nnUNet_preprocessed"] / DATASET / "gt_segmentations"
    (gt / "case_b.nii.gz").unlink()
    code = main(["compare", "-d", "42", "-c", "3d_fullres", "-tr", "nnUNetTrainer", "-f", "0", "--boundary",
                 "--out", str(tmp_path / "cmp")])
    assert code == 2
    err = capsys.readouterr().err
    assert "case_b" in err and "--gt-folder" in err
    assert not (tmp_path / "cmp" / "comparison.md").exists()


def test_mask_metrics_and_geometry():
    a = np.zeros((1, 1, 20, 20), np.uint8)
    a[0, 0, 5:15, 5:15] = 1
    arr, spacing = to_evaluation_geometry(a, (999.0, 1.0, 1.0))  # a PNG read by nnU-Net: 2D, pixel units
    assert arr.shape == (20, 20) and spacing == (1.0, 1.0)
    b = np.zeros((20, 20), bool)
    b[5:15, 9:19] = True  # shifted by 4 pixels along x
    hd95, nsd, status = mask_boundary_metrics(b, arr == 1, (1.0, 1.0), tolerance_mm=10.0)
    assert status == "ok" and hd95 == pytest.approx(4.0) and nsd == pytest.approx(1.0)
    hd95, nsd, _ = mask_boundary_metrics(b, arr == 1, (1.0, 0.5), tolerance_mm=10.0)
    assert hd95 == pytest.approx(2.0)  # the x spacing (second axis) halves the distance
    assert mask_boundary_metrics(b, np.zeros_like(b), (1.0, 1.0), 2.0)[1:] == (0.0, "ref_empty")
    assert mask_boundary_metrics(np.zeros_like(b), np.zeros_like(b), (1.0, 1.0), 2.0)[2] == "both_empty"
