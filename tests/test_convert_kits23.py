"""KiTS23 converter: nnU-Net's Dataset220 semantics, the real (Z, Y, X) / IPL headers, partial downloads."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from convert_fixtures import KITS_CASES, kits_affine, make_kits, raw_entries, save_nifti, tree_digest
from nnunet_lmnet.dataset_conversion.kits23 import convert_kits23
from nnunet_lmnet.errors import UserError


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def kits(tmp_path):
    truth = make_kits(tmp_path)
    return tmp_path / "kits23", truth, tmp_path / "raw"


def test_partial_download_is_reported(kits, capsys):
    source, _, raw = kits
    with pytest.raises(UserError, match=r"1 of 4 KiTS23 cases .*interrupted \.partial.*'case_00002'.*"
                                        r"kits23_download_data.*--skip-incomplete"):
        convert_kits23(source, output_root=raw, num_processes=1)
    assert not raw_entries(raw)

    out = convert_kits23(source, output_root=raw, num_processes=1, skip_incomplete=True)
    assert "case_00002" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in KITS_CASES]


def test_converts_like_nnunets_dataset220(kits):
    import nibabel as nib
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient

    source, truth, raw = kits
    (source / "dataset" / "case_00002").rename(source / "not_a_case")  # a complete download from here on
    seg = nib.load(str(source / "dataset" / "case_00000" / "segmentation.nii.gz"))
    # the fixture carries the real header pattern
    assert nib.aff2axcodes(seg.affine) == ("I", "P", "L")
    assert (int(seg.header["sform_code"]), int(seg.header["qform_code"])) == (2, 0)
    before = tree_digest(source)

    # verify=True: nnU-Net's own integrity check (its real spawn pool) runs before the folder is moved into place
    out = convert_kits23(source / "dataset", output_root=raw, num_processes=2, verify=True)
    assert out.name == "Dataset506_KiTS23" and raw_entries(raw) == {out.name}
    assert tree_digest(source) == before
    for case in KITS_CASES:
        assert _sha(out / "imagesTr" / f"{case}_0000.nii.gz") == _sha(source / "dataset" / case / "imaging.nii.gz")
        assert _sha(out / "labelsTr" / f"{case}.nii.gz") == _sha(
            source / "dataset" / case / "segmentation.nii.gz")
    assert not any("instance" in p.name for p in out.rglob("*"))

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}
    assert list(meta["labels"]) == ["background", "kidney", "masses", "tumor"]  # order matters for regions
    assert meta["regions_class_order"] == [1, 3, 2]
    assert meta["overwrite_image_reader_writer"] == "NibabelIOWithReorient"
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz"
    assert meta["numTraining"] == 3

    # nnU-Net's reader puts the slice axis first with its spacing, as for the real (Z, Y, X) files
    shape, sz, px, _ = KITS_CASES["case_00400"]
    data, props = NibabelIOWithReorient().read_seg(str(out / "labelsTr" / "case_00400.nii.gz"))
    assert data.shape == (1, *shape) and props["spacing"] == pytest.approx([sz, px, px])
    # ('I', 'P', 'L') reoriented to RAS: every axis flipped, none transposed
    assert np.array_equal(data[0], truth["case_00400"][::-1, ::-1, ::-1])


def _fails(source, raw, match, **kwargs):
    with pytest.raises(UserError, match=match):
        convert_kits23(source, output_root=raw, num_processes=1, skip_incomplete=True, **kwargs)
    assert not raw_entries(raw)


def test_bad_cases(kits, tmp_path):
    source, truth, raw = kits
    case = source / "dataset" / "case_00001"
    shape, sz, px, _ = KITS_CASES["case_00001"]
    good = (case / "segmentation.nii.gz").read_bytes()
    bad = truth["case_00001"].copy()
    bad[0, 0, 0] = 4
    save_nifti(bad, kits_affine(sz, px), case / "segmentation.nii.gz")
    _fails(source, raw, r"unexpected label values in .*case_00001/segmentation\.nii\.gz: 4")

    save_nifti(bad[:-1], kits_affine(sz, px), case / "segmentation.nii.gz")
    _fails(source, raw, r"size mismatch: .*case_00001/imaging\.nii\.gz")
    (case / "segmentation.nii.gz").write_bytes(good)

    image = source / "dataset" / "case_00400" / "imaging.nii.gz"
    image.write_bytes(image.read_bytes()[:-64])
    _fails(source, raw, r"case_00400/imaging\.nii\.gz is corrupt or truncated")

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "imaging.nii.gz").write_bytes(b"")
    _fails(tmp_path / "other", raw, "does not hold the KiTS23 data")


@pytest.mark.parametrize("change", ["flipped axis", "shifted origin"])
def test_a_label_off_the_image_grid_is_refused(kits, change):
    """Same shape and spacing, but the label's affine flips an axis or moves the origin: it would train misaligned."""
    source, truth, raw = kits
    shape, sz, px, _ = KITS_CASES["case_00001"]
    affine = kits_affine(sz, px)
    if change == "flipped axis":
        affine[:3, 2] *= -1
    else:
        affine[:3, 3] += (0.0, 0.0, 2.5)
    save_nifti(truth["case_00001"], affine, source / "dataset" / "case_00001" / "segmentation.nii.gz")
    what = "direction mismatch" if change == "flipped axis" else "origin mismatch"
    _fails(source, raw, f"{what}: .*case_00001/imaging\\.nii\\.gz has .* but its label .*case_00001/"
                        f"segmentation\\.nii\\.gz has .*rtol=1e-5, atol=1e-8, as nnU-Net's verify_dataset_integrity")
