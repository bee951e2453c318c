"""`nnunet-lmnet export-submission`: round trips on generated predictions, and the checks that must refuse."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from nnunet_lmnet.cli import main


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------- ISIC 2018
ISIC_SHAPES = {"ISIC_0000001": (30, 40), "ISIC_0012345": (25, 35)}  # (height, width)


def _isic_predictions(folder: Path) -> dict[str, np.ndarray]:
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1},
                                                     "file_ending": ".png", "channel_names": {"0": "R"}}))
    rng = np.random.default_rng(1)
    segs = {}
    for case, (h, w) in ISIC_SHAPES.items():
        seg = np.zeros((h, w), np.uint8)
        seg[5:15, 8:20] = 1
        if case == "ISIC_0012345":
            seg[20:23, 30:33] = 1  # a second component
        seg[rng.integers(0, h), 0] = 0
        NaturalImage2DIO().write_seg(seg[None], str(folder / f"{case}.png"), {"spacing": (999, 1, 1)})
        segs[case] = seg
    return segs


def _isic_images(folder: Path, sizes=None) -> None:
    folder.mkdir(parents=True)
    for case, (h, w) in (sizes or ISIC_SHAPES).items():
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(folder / f"{case}.jpg")
    (folder / "LICENSE.txt").write_text("CC-BY-NC")


def test_isic2018_round_trip(tmp_path, capsys):
    pred, out, imgs = tmp_path / "pred", tmp_path / "sub", tmp_path / "images"
    segs = _isic_predictions(pred)
    _isic_images(imgs)
    before = _digest(pred)
    assert main(["export-submission", "isic2018", str(pred), str(out), "--reference-images", str(imgs),
                 "--zip"]) == 0
    report = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["ISIC_0000001_segmentation.png",
                                                     "ISIC_0012345_segmentation.png"]
    for case, seg in segs.items():
        with Image.open(out / f"{case}_segmentation.png") as im:
            assert im.mode == "L" and im.size == (seg.shape[1], seg.shape[0])
            back = np.asarray(im)
        assert set(np.unique(back)) <= {0, 255}
        np.testing.assert_array_equal(back, seg * 255)
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert sorted(zf.namelist()) == ["ISIC_0000001_segmentation.png", "ISIC_0012345_segmentation.png"]
    assert "1 mask(s) have more than one connected component" in report
    assert "Checked against the reference images" in report
    assert _digest(pred) == before  # predictions untouched

    # existing output: refused, then replaced with --overwrite
    assert main(["export-submission", "isic2018", str(pred), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export-submission", "isic2018", str(pred), str(out), "--overwrite"]) == 0
    (out / "readme.txt").write_text("not ours")
    assert main(["export-submission", "isic2018", str(pred), str(out), "--overwrite"]) == 2
    assert "does not write" in capsys.readouterr().err
    assert (out / "readme.txt").exists()


def test_isic2018_refuses_bad_predictions(tmp_path, capsys):
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    pred, imgs = tmp_path / "pred", tmp_path / "images"
    _isic_predictions(pred)
    # wrong size against the reference image
    _isic_images(imgs, {"ISIC_0000001": (30, 41), "ISIC_0012345": (25, 35)})
    assert main(["export-submission", "isic2018", str(pred), str(tmp_path / "a"), "--reference-images",
                 str(imgs)]) == 2
    err = capsys.readouterr().err
    assert "ISIC_0000001.png: size 40x30 but the image ISIC_0000001.jpg is 41x30" in err
    assert not (tmp_path / "a").exists()
    # a reference image without prediction
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(imgs / "ISIC_0099999.jpg")
    assert main(["export-submission", "isic2018", str(pred), str(tmp_path / "b"), "--reference-images",
                 str(imgs)]) == 2
    assert "ISIC_0099999.jpg" in capsys.readouterr().err
    # an unexpected label
    seg = np.zeros((30, 40), np.uint8)
    seg[0, 0] = 2
    NaturalImage2DIO().write_seg(seg[None], str(pred / "ISIC_0000001.png"), {"spacing": (999, 1, 1)})
    assert main(["export-submission", "isic2018", str(pred), str(tmp_path / "c")]) == 2
    assert "unexpected label values [2]" in capsys.readouterr().err
    # a case name without an ISIC id
    (pred / "ISIC_0000001.png").rename(pred / "lesion_a.png")
    assert main(["export-submission", "isic2018", str(pred), str(tmp_path / "d")]) == 2
    assert "no ISIC image id" in capsys.readouterr().err
    # output inside the predictions
    assert main(["export-submission", "isic2018", str(pred), str(pred / "sub")]) == 2
    assert "outside PRED_DIR" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- KiTS23 / BTCV
AFFINE = np.array([[0.0, 0.0, -0.8, 10.0], [0.0, -0.8, 0.0, 20.0], [3.0, 0.0, 0.0, -5.0], [0.0, 0.0, 0.0, 1.0]])


def _nifti(path: Path, arr, affine=AFFINE, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr, dtype=dtype), affine), str(path))


def _labels(shape, max_label, seed):
    return np.random.default_rng(seed).integers(0, max_label + 1, size=shape).astype(np.uint8)


def test_kits23_round_trip_and_checks(tmp_path, capsys):
    pred, imgs = tmp_path / "pred", tmp_path / "images"
    pred.mkdir()
    (pred / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "labels": {"background": 0}}))
    for i, case in enumerate(["case_00400", "case_00401"]):
        _nifti(pred / f"{case}.nii.gz", _labels((6, 7, 8), 3, i))
    _nifti(imgs / "case_00400_0000.nii.gz", np.zeros((6, 7, 8)), dtype=np.int16)   # nnU-Net naming
    _nifti(imgs / "case_00401" / "imaging.nii.gz", np.zeros((6, 7, 8)), dtype=np.int16)  # KiTS layout
    out = tmp_path / "sub"
    assert main(["export-submission", "kits23", str(pred), str(out), "--reference-images", str(imgs)]) == 0
    assert "and affine" in capsys.readouterr().out
    assert _digest(out) == {k: v for k, v in _digest(pred).items() if k != "dataset.json"}  # byte for byte
    back = nib.load(str(out / "case_00401.nii.gz"))
    np.testing.assert_allclose(back.affine, AFFINE)
    assert set(np.unique(np.asanyarray(back.dataobj))) <= {0, 1, 2, 3}

    # not in the original geometry (another spacing)
    shifted = AFFINE.copy()
    shifted[2, 0] = 2.5
    _nifti(imgs / "case_00400_0000.nii.gz", np.zeros((6, 7, 8)), affine=shifted, dtype=np.int16)
    assert main(["export-submission", "kits23", str(pred), str(tmp_path / "s2"), "--reference-images",
                 str(imgs)]) == 2
    assert "case_00400.nii.gz: affine differs" in capsys.readouterr().err
    # a label outside 0..3, and a probability map
    _nifti(pred / "case_00401.nii.gz", np.full((6, 7, 8), 4))
    _nifti(pred / "case_00402.nii.gz", np.full((6, 7, 8), 0.5), dtype=np.float32)
    assert main(["export-submission", "kits23", str(pred), str(tmp_path / "s3")]) == 2
    err = capsys.readouterr().err
    assert "case_00401.nii.gz: unexpected label values [4] (allowed: [0, 1, 2, 3])" in err
    assert "case_00402.nii.gz: non-integer values" in err
    assert not (tmp_path / "s3").exists()


def test_btcv_naming_labels_and_template(tmp_path, capsys):
    pred, imgs = tmp_path / "pred", tmp_path / "images"
    for i, case in enumerate(["BTCV_0061", "BTCV_0062"]):
        _nifti(pred / f"{case}.nii.gz", _labels((5, 5, 4), 13, i))
        _nifti(imgs / f"img00{61 + i}.nii.gz", np.zeros((5, 5, 4)), dtype=np.int16)
    assert main(["export-submission", "btcv", str(pred), tmp_path.joinpath("sub").as_posix(), "--reference-images",
                 str(imgs)]) == 0
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["label0061.nii.gz", "label0062.nii.gz"]
    assert (tmp_path / "sub" / "label0062.nii.gz").read_bytes() == (pred / "BTCV_0062.nii.gz").read_bytes()
    assert main(["export-submission", "btcv", str(pred), str(tmp_path / "t"), "--name-template",
                 "pred{num:04d}.nii.gz"]) == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["pred0061.nii.gz", "pred0062.nii.gz"]
    _nifti(pred / "BTCV_0063.nii.gz", np.full((5, 5, 4), 14))
    assert main(["export-submission", "btcv", str(pred), str(tmp_path / "u")]) == 2
    assert "unexpected label values [14]" in capsys.readouterr().err


def test_generic_passthrough(tmp_path, capsys):
    pred, imgs = tmp_path / "pred", tmp_path / "images"
    _nifti(pred / "liver_001.nii.gz", _labels((4, 5, 6), 2, 0))
    _nifti(pred / "liver_002.nii.gz", _labels((4, 5, 6), 2, 1))
    (pred / "liver_001.npz").write_bytes(b"probabilities are not exported")
    _nifti(imgs / "liver_001_0000.nii.gz", np.zeros((4, 5, 6)), dtype=np.float32)
    _nifti(imgs / "liver_001_0001.nii.gz", np.zeros((4, 5, 6)), dtype=np.float32)  # second channel: ignored
    _nifti(imgs / "liver_002_0000.nii.gz", np.zeros((4, 5, 6)), dtype=np.float32)
    out = tmp_path / "sub"
    assert main(["export-submission", "generic", str(pred), str(out), "--file-ending", ".nii.gz", "--labels", "0",
                 "1", "2", "--reference-images", str(imgs)]) == 0
    assert _digest(out) == {k: v for k, v in _digest(pred).items() if k.endswith(".nii.gz")}
    assert main(["export-submission", "generic", str(pred), str(tmp_path / "v"), "--file-ending", ".nii.gz",
                 "--labels", "0", "1"]) == 2
    assert "unexpected label values [2]" in capsys.readouterr().err
    assert main(["export-submission", "generic", str(pred), str(tmp_path / "w")]) == 2
    assert "--file-ending" in capsys.readouterr().err
    _nifti(imgs / "liver_002_0000.nii.gz", np.zeros((4, 5, 7)), dtype=np.float32)
    assert main(["export-submission", "generic", str(pred), str(tmp_path / "x"), "--file-ending", ".nii.gz",
                 "--reference-images", str(imgs)]) == 2
    assert "liver_002.nii.gz: shape" in capsys.readouterr().err


@pytest.mark.parametrize("challenge", ["isic2018", "kits23", "btcv", "generic"])
def test_empty_prediction_folder(tmp_path, capsys, challenge):
    (tmp_path / "pred").mkdir()
    args = ["export-submission", challenge, str(tmp_path / "pred"), str(tmp_path / "sub")]
    assert main(args + (["--file-ending", ".nii.gz"] if challenge == "generic" else [])) == 2
    assert "no *" in capsys.readouterr().err


def test_isic2018_resize_to_reference(tmp_path, capsys):
    """Datasets converted with --max-size predict downscaled masks; they are scaled back to the image size."""
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    pred, imgs = tmp_path / "pred", tmp_path / "images"
    pred.mkdir()
    small = np.zeros((15, 20), np.uint8)
    small[3:9, 4:12] = 1
    NaturalImage2DIO().write_seg(small[None], str(pred / "ISIC_0000001.png"), {"spacing": (999, 1, 1)})
    NaturalImage2DIO().write_seg(np.ones((1, 13, 18), np.uint8), str(pred / "ISIC_0012345.png"),
                                 {"spacing": (999, 1, 1)})
    _isic_images(imgs)  # 40x30 and 35x25 (width x height)
    assert main(["export-submission", "isic2018", str(pred), str(tmp_path / "a"), "--reference-images",
                 str(imgs)]) == 2
    assert "--resize-to-reference" in capsys.readouterr().err
    assert main(["export-submission", "isic2018", str(pred), str(tmp_path / "b"), "--reference-images", str(imgs),
                 "--resize-to-reference"]) == 0
    assert "2 mask(s) were rescaled" in capsys.readouterr().out
    with Image.open(tmp_path / "b" / "ISIC_0000001_segmentation.png") as im:
        assert im.size == (40, 30)
        np.testing.assert_array_equal(np.asarray(im), np.repeat(np.repeat(small, 2, 0), 2, 1) * 255)
    with Image.open(tmp_path / "b" / "ISIC_0012345_segmentation.png") as im:
        assert im.size == (35, 25) and set(np.unique(np.asarray(im))) == {255}
    # another aspect ratio is not a downscaled copy
    NaturalImage2DIO().write_seg(np.ones((1, 20, 20), np.uint8), str(pred / "ISIC_0000001.png"),
                                 {"spacing": (999, 1, 1)})
    assert main(["export-submission", "isic2018", str(pred), str(tmp_path / "c"), "--reference-images", str(imgs),
                 "--resize-to-reference"]) == 2
    assert "another aspect ratio" in capsys.readouterr().err
    assert main(["export-submission", "isic2018", str(pred), str(tmp_path / "d"), "--resize-to-reference"]) == 2
    assert "needs --reference-images" in capsys.readouterr().err
