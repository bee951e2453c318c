"""BTCV converter: RawData pairs copied unchanged, 13 organ labels, Testing to imagesTs, decoys, literature splits."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from convert_fixtures import (BTCV_AFFINE, SPLITS_DIR, make_btcv, needs_splits, raw_entries, save_nifti,
                              tree_digest, verify_with_nnunet)
from nnunet_lmnet.dataset_conversion.btcv import convert_btcv
from nnunet_lmnet.errors import UserError

LABELLED_30 = [f"{n:04d}" for n in [*range(1, 11), *range(21, 41)]]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def btcv(tmp_path):
    truth = make_btcv(tmp_path / "Abdomen")
    return tmp_path / "Abdomen", truth, tmp_path / "raw"


def test_converts_rawdata_next_to_the_decoys(btcv):
    source, truth, raw = btcv
    before = tree_digest(source)
    out = convert_btcv(source, output_root=raw, num_processes=2)

    assert out.name == "Dataset505_BTCV" and raw_entries(raw) == {out.name}
    assert tree_digest(source) == before
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"BTCV_{n}_0000.nii.gz" for n in truth]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["BTCV_0061_0000.nii.gz",
                                                                    "BTCV_0062_0000.nii.gz"]
    for n in truth:  # byte for byte
        assert _sha(out / "imagesTr" / f"BTCV_{n}_0000.nii.gz") == _sha(
            source / "RawData" / "Training" / "img" / f"img{n}.nii.gz")
        assert _sha(out / "labelsTr" / f"BTCV_{n}.nii.gz") == _sha(
            source / "RawData" / "Training" / "label" / f"label{n}.nii.gz")
    assert not any("DET" in p.name for p in out.rglob("*"))

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == 4
    assert list(meta["labels"]) == ["background", "spleen", "right kidney", "left kidney", "gallbladder",
                                    "esophagus", "liver", "stomach", "aorta", "inferior vena cava",
                                    "portal vein and splenic vein", "pancreas", "right adrenal gland",
                                    "left adrenal gland"]
    assert list(meta["labels"].values()) == list(range(14))
    assert len(json.loads((out / "splits_final.json").read_text())) == 4
    verify_with_nnunet(out)


@needs_splits
def test_literature_splits(tmp_path):
    make_btcv(tmp_path / "dl", train=LABELLED_30, test=(), shape=(6, 5, 3), decoys=False)
    published = json.loads((SPLITS_DIR / "btcv" / "btcv_case_splits.json").read_text())

    # TransUNet's 12 test volumes as 'caseNNNN' -> one fold, train = the other 18
    out = convert_btcv(tmp_path / "dl" / "RawData", output_root=tmp_path / "raw", num_processes=2,
                       splits=[SPLITS_DIR / "btcv" / "transunet_synapse_test_vol.txt"])
    (fold,) = json.loads((out / "splits_final.json").read_text())
    assert fold["val"] == [f"BTCV_{n}" for n in published["transunet_synapse_18_12"]["test"]]
    assert fold["train"] == [f"BTCV_{n}" for n in published["transunet_synapse_18_12"]["train"]]

    # UNETR 24/6 as an nnU-Net JSON with the published NNNN ids
    split_json = tmp_path / "unetr.json"
    split_json.write_text(json.dumps([published["unetr_swinunetr_24_6"]]))
    out = convert_btcv(tmp_path / "dl", output_root=tmp_path / "raw", num_processes=1, splits=[split_json],
                       overwrite=True)
    (fold,) = json.loads((out / "splits_final.json").read_text())
    assert fold["val"] == [f"BTCV_00{n}" for n in range(35, 41)] and len(fold["train"]) == 24


def test_synapse8_label_remap(btcv):
    import nibabel as nib

    source, truth, raw = btcv
    out = convert_btcv(source, output_root=raw, num_processes=1, labels="synapse8")
    remap = {1: 1, 2: 2, 3: 3, 4: 4, 5: 0, 6: 5, 7: 6, 8: 7, 9: 0, 10: 0, 11: 8, 12: 0, 13: 0}
    for n, label in truth.items():
        written = nib.load(str(out / "labelsTr" / f"BTCV_{n}.nii.gz"))
        assert np.allclose(written.affine, BTCV_AFFINE)
        assert np.array_equal(np.asanyarray(written.dataobj), np.vectorize(lambda v: remap.get(v, 0))(label))
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4,
                              "liver": 5, "stomach": 6, "aorta": 7, "pancreas": 8}


def _fails(source, raw, match, **kwargs):
    with pytest.raises(UserError, match=match):
        convert_btcv(source, output_root=raw, num_processes=1, **kwargs)
    assert not raw_entries(raw)


def test_decoys_alone_are_refused(btcv):
    source, _, raw = btcv
    shutil.rmtree(source / "RawData")
    _fails(source, raw, r"averaged-\*.*not the BTCV abdomen CT.*RawData\.zip")


def test_decoy_file_in_training(btcv):
    source, _, raw = btcv
    shutil.copy(source / "averaged-training-images" / "DET0000101_avg.nii.gz",
                source / "RawData" / "Training" / "img")
    _fails(source, raw, r"DET0000101_avg\.nii\.gz is a Synapse 'averaged'")


def test_bad_pairs(btcv):
    source, _, raw = btcv
    labels = source / "RawData" / "Training" / "label"
    (labels / "label0021.nii.gz").rename(labels.parent / "moved.nii.gz")
    _fails(source, raw, r"have no label .*img0021\.nii\.gz")
    (labels.parent / "moved.nii.gz").rename(labels / "label0021.nii.gz")

    good = (labels / "label0002.nii.gz").read_bytes()
    bad = np.zeros((16, 12, 6), np.uint8)
    bad[0, 0, 0] = 14
    save_nifti(bad, BTCV_AFFINE, labels / "label0002.nii.gz")
    _fails(source, raw, r"unexpected label values in .*label0002\.nii\.gz: 14")

    save_nifti(np.zeros((16, 12, 5), np.uint8), BTCV_AFFINE, labels / "label0002.nii.gz")
    _fails(source, raw, r"size mismatch: .*img0002\.nii\.gz has shape \(16, 12, 6\)")
    (labels / "label0002.nii.gz").write_bytes(good)

    image = source / "RawData" / "Testing" / "img" / "img0061.nii.gz"
    image.write_bytes(image.read_bytes()[:-40])  # truncated download
    _fails(source, raw, r"img0061\.nii\.gz is corrupt or truncated")


def _save_both_forms(array, sform, qform, path) -> None:
    """sform and qform both set (code 1), as in many scanner exports; SimpleITK may read either."""
    import nibabel as nib

    img = nib.Nifti1Image(array, sform)
    img.header.set_sform(sform, code=1)
    img.header.set_qform(qform, code=1)
    nib.save(img, str(path))


@pytest.mark.parametrize("change", ["flipped axis", "shifted origin", "flipped qform"])
def test_a_label_off_the_image_grid_is_refused(btcv, change):
    """Same shape and spacing, but the label's affine flips an axis or moves the origin; nnU-Net only warns."""
    import nibabel as nib

    source, truth, raw = btcv
    training = source / "RawData" / "Training"
    image = nib.load(str(training / "img" / "img0021.nii.gz"))
    _save_both_forms(np.asanyarray(image.dataobj), BTCV_AFFINE, BTCV_AFFINE, training / "img" / "img0021.nii.gz")
    affine = BTCV_AFFINE.copy()
    if change == "shifted origin":
        affine[:3, 3] += (0.0, 0.0, 3.0)  # one slice
    else:
        affine[:3, 1] *= -1
    _save_both_forms(truth["0021"], BTCV_AFFINE if change == "flipped qform" else affine, affine,
                     training / "label" / "label0021.nii.gz")
    what = {"flipped axis": "direction mismatch", "shifted origin": "origin mismatch",
            "flipped qform": "direction mismatch in the qform of its header"}[change]
    _fails(source, raw, f"{what}: .*img0021\\.nii\\.gz has .* but its label .*label0021\\.nii\\.gz has "
                        f".*rtol=1e-5, atol=1e-8")


def test_geometry_within_nnunets_tolerance_converts(btcv):
    source, truth, raw = btcv
    affine = BTCV_AFFINE.copy()
    affine[:3, 3] += 1e-4  # float noise far below a voxel: allclose's rtol 1e-5 of an origin near 200 mm
    save_nifti(truth["0021"], affine, source / "RawData" / "Training" / "label" / "label0021.nii.gz")
    assert convert_btcv(source, output_root=raw, num_processes=1).is_dir()
