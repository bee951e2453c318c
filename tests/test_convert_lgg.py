"""LGG kaggle_3m converter: duplicate copy ignored, numeric slice order, named channels, patient-grouped folds."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import (LGG_PATIENTS, check_folds, lgg_pixel, load_png, make_lgg, raw_entries, tree_digest,
                              verify_with_nnunet)
from nnunet_lmnet.dataset_conversion.lgg import convert_lgg, patient_of
from nnunet_lmnet.errors import UserError

NUM_SLICES = sum(LGG_PATIENTS.values())


@pytest.fixture
def lgg(tmp_path):
    truth = make_lgg(tmp_path / "archive")
    return tmp_path / "archive", truth, tmp_path / "raw"


def test_2d_slices_with_named_channels_and_grouped_folds(lgg):
    source, truth, raw = lgg
    before = tree_digest(source)
    out = convert_lgg(source, output_root=raw, num_processes=2)

    assert out.name == "Dataset503_LGG" and raw_entries(raw) == {out.name}
    assert tree_digest(source) == before
    labels = sorted(p.name for p in (out / "labelsTr").iterdir())
    assert len(labels) == NUM_SLICES  # the nested lgg-mri-segmentation/kaggle_3m copy is not added
    assert len(list((out / "imagesTr").iterdir())) == 3 * NUM_SLICES
    for p, folder in enumerate(LGG_PATIENTS):
        for n in range(1, LGG_PATIENTS[folder] + 1):
            cid = f"{folder}_s{n:03d}"
            for c in range(3):  # _0000 pre-contrast, _0001 FLAIR, _0002 post-contrast, from slice n itself
                plane = load_png(out / "imagesTr" / f"{cid}_{c:04d}.png")
                assert plane.ndim == 2 and np.all(plane == lgg_pixel(c, p, n)), (cid, c)
            assert np.array_equal(load_png(out / "labelsTr" / f"{cid}.png"), truth[(folder, n)].astype(np.uint8))

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "pre-contrast", "1": "FLAIR", "2": "post-contrast"}
    assert meta["labels"] == {"background": 0, "FLAIR abnormality": 1} and meta["numTraining"] == NUM_SLICES
    folds = json.loads((out / "splits_final.json").read_text())
    cases = {name[: -len(".png")] for name in labels}
    assert len(folds) == 5
    check_folds(folds, cases)
    for fold in folds:  # no patient on both sides of any fold
        patients = lambda ids: {patient_of(i.rsplit("_s", 1)[0]) for i in ids}  # noqa: E731
        assert patients(fold["train"]).isdisjoint(patients(fold["val"]))
    verify_with_nnunet(out)


@pytest.mark.parametrize("inner", ["kaggle_3m", "lgg-mri-segmentation", "lgg-mri-segmentation/kaggle_3m"])
def test_source_may_be_any_level(lgg, inner):
    source, _, raw = lgg
    out = convert_lgg(source / inner, output_root=raw, num_processes=1)
    assert len(list((out / "labelsTr").iterdir())) == NUM_SLICES


def test_3d_volumes_in_numeric_slice_order(lgg):
    import SimpleITK as sitk

    source, truth, raw = lgg
    out = convert_lgg(source, output_root=raw, num_processes=1, as_3d=True, spacing=(0.9, 0.9, 2.5))
    assert out.name == "Dataset507_LGG3D"
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == sorted(f"{f}.nii.gz" for f in LGG_PATIENTS)
    folder = "TCGA_CS_4941_19960909"  # 12 slices: _10.._12 must follow _9
    for c in range(3):
        image = sitk.ReadImage(str(out / "imagesTr" / f"{folder}_{c:04d}.nii.gz"))
        assert image.GetSize() == (16, 16, 12) and image.GetSpacing() == pytest.approx((0.9, 0.9, 2.5))
        array = sitk.GetArrayFromImage(image)
        assert [int(array[z, 0, 0]) for z in range(12)] == [lgg_pixel(c, 0, n) for n in range(1, 13)]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{folder}.nii.gz")))
    assert np.array_equal(label, np.stack([truth[(folder, n)] for n in range(1, 13)]).astype(np.uint8))
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["file_ending"] == ".nii.gz" and meta["numTraining"] == len(LGG_PATIENTS)
    check_folds(json.loads((out / "splits_final.json").read_text()), set(LGG_PATIENTS))
    verify_with_nnunet(out)


def test_split_lists_may_name_patients(lgg, tmp_path, capsys):
    source, _, raw = lgg
    val = tmp_path / "val.txt"
    val.write_text("TCGA_CS_4941_19960909\nTCGA_HT_A61B\n")  # a folder name and a bare patient id
    out = convert_lgg(source, output_root=raw, num_processes=1, splits=[val])
    (fold,) = json.loads((out / "splits_final.json").read_text())
    assert len(fold["val"]) == 12 + 3 and all(i.startswith(("TCGA_CS_4941_", "TCGA_HT_A61B_")) for i in fold["val"])
    assert len(fold["train"]) == NUM_SLICES - 15

    # a slice-level list (as LM-Net made them) is honoured, with a warning about patient leakage
    val.write_text("TCGA_CS_4941_19960909_1.tif\nkaggle_3m/TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_2.tif\n")
    out = convert_lgg(source, output_root=raw, num_processes=1, splits=[val], overwrite=True)
    (fold,) = json.loads((out / "splits_final.json").read_text())
    assert fold["val"] == ["TCGA_CS_4941_19960909_s001", "TCGA_CS_4941_19960909_s002"]
    assert "same patient" in capsys.readouterr().out


def _fails(source, raw, match, **kwargs):
    with pytest.raises(UserError, match=match):
        convert_lgg(source, output_root=raw, num_processes=1, **kwargs)
    assert not raw_entries(raw)


def test_bad_slices(lgg):
    source, _, raw = lgg
    folder = source / "kaggle_3m" / "TCGA_DU_A5TP_19970614"
    mask = folder / "TCGA_DU_A5TP_19970614_2_mask.tif"
    mask.rename(mask.with_suffix(".bak"))
    _fails(source, raw, r"have no mask: 'TCGA_DU_A5TP_19970614_2\.tif'")
    mask.with_suffix(".bak").rename(mask)

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "TCGA_DU_A5TP_19970614_3.tif")  # grey, 1 channel
    _fails(source, raw, r"TCGA_DU_A5TP_19970614_3\.tif is not an 8-bit 3-channel")

    Image.fromarray(np.zeros((8, 16), np.uint8)).save(folder / "TCGA_DU_A5TP_19970614_3_mask.tif")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "TCGA_DU_A5TP_19970614_3.tif")
    _fails(source, raw, r"size mismatch.*TCGA_DU_A5TP_19970614_3_mask\.tif")

    Image.fromarray(np.full((16, 16), 3, np.uint8)).save(folder / "TCGA_DU_A5TP_19970614_3_mask.tif")
    _fails(source, raw, r"unexpected label values in .*_3_mask\.tif")


def test_not_an_lgg_download(tmp_path):
    (tmp_path / "kaggle_3m").mkdir()
    (tmp_path / "kaggle_3m" / "data.csv").write_text("Patient\n")
    _fails(tmp_path, tmp_path / "raw", "does not hold the LGG kaggle_3m data")
