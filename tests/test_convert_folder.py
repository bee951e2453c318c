"""Generic folder converter: PNG/JPEG/BMP/TIFF in, mask suffix, grey/RGB channels, label maps, target/training modes,
bad inputs, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import load_png, raw_entries, tree_digest, verify_with_nnunet
from nnunet_lmnet.cli import main
from nnunet_lmnet.dataset_conversion.folder import convert_folder
from zero_shot_fixtures import blob, refused, texture

H, W = 22, 30


def _mask(k: int) -> np.ndarray:
    return blob(H, W, 8 + k, 12 + k, 5, 6)


@pytest.fixture
def bus(tmp_path):
    """A BUSIS-like download in every accepted format: images/<stem>.<ext>, gt/<stem>_gt.<ext>."""
    rng = np.random.default_rng(9)
    images, masks = tmp_path / "dl" / "images", tmp_path / "dl" / "gt"
    images.mkdir(parents=True)
    masks.mkdir()
    grey = texture(rng, H, W, 1)[..., 0]
    colour = np.repeat(grey[..., None], 3, -1)
    colour[:, :8] = (200, 30, 30)  # a Doppler-like colour region
    Image.fromarray(grey).save(images / "case 1.png")
    Image.fromarray(np.repeat(grey[..., None], 3, -1)).save(images / "case2.jpg", quality=95)
    Image.fromarray(colour).save(images / "case3.BMP")
    Image.fromarray(grey.astype(np.uint16) * 200).save(images / "case4.tif")  # 16-bit grey
    truth = {}
    for k, (stem, ext) in enumerate((("case 1", "png"), ("case2", "jpg"), ("case3", "bmp"), ("case4", "tiff"))):
        m = _mask(k)
        Image.fromarray(m.astype(np.uint8) * (1 if k == 3 else 255)).save(masks / f"{stem}_gt.{ext}")
        truth[stem.replace(" ", "_")] = m
    return images, masks, truth, tmp_path / "raw"


def test_grey_target_from_mixed_formats(bus, capsys):
    images, masks, truth, raw = bus
    before = tree_digest(images.parent)
    # 255:1 (the example) is the binary default: 0/1 and lossy JPEG masks are accepted too
    out = convert_folder(images, masks, "BUSIS", output_root=raw, num_processes=1, mask_suffix="_gt",
                         label_map=["255:1"], label_names=["lesion"], verify=True)

    assert out == raw / "Dataset520_BUSIS" and raw_entries(raw) == {out.name}
    assert tree_digest(images.parent) == before
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == [f"{c}.png" for c in sorted(truth)]
    for cid, mask in truth.items():
        label = load_png(out / "labelsTs" / f"{cid}.png")
        assert (label != mask).mean() < 0.01 and set(np.unique(label)) == {0, 1}  # 0/255, 0/1 and JPEG masks
        assert load_png(out / "imagesTs" / f"{cid}_0000.png").ndim == 2
    assert np.array_equal(load_png(out / "imagesTs" / "case_1_0000.png"), np.asarray(Image.open(images / "case 1.png")))
    wide = load_png(out / "imagesTs" / "case4_0000.png")
    assert wide.dtype == np.uint16 and np.array_equal(wide, np.asarray(Image.open(images / "case4.tif")))
    assert "1 BUSIS image(s) have colour pixels" in capsys.readouterr().out
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 0 and meta["channel_names"] == {"0": "grey"}
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert json.loads((out / "case_mapping.json").read_text())["case_1"] == ["images/case 1.png", "gt/case 1_gt.png"]


def test_one_folder_rgb_training_dataset_from_the_cli(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(10)
    data = tmp_path / "bus_bra"
    data.mkdir()
    for k in range(3):
        Image.fromarray(texture(rng, H, W, 1)[..., 0]).save(data / f"bus_{k:04d}-l.png")
        Image.fromarray(_mask(k).astype(np.uint8) * 255).save(data / f"bus_{k:04d}-l_mask.png")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert main(["convert", "folder", str(data), str(data), "--name", "BUSBRA", "--mask-suffix", "_mask",
                 "--channels", "rgb", "--mode", "training", "--dataset-id", "593", "--num-processes", "1"]) == 0
    out = tmp_path / "raw" / "Dataset593_BUSBRA"
    assert "3 training case(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"bus_{k:04d}-l_0000.png" for k in range(3)]
    assert load_png(out / "imagesTr" / "bus_0000-l_0000.png").shape == (H, W, 3)  # grey replicated to R, G, B
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["numTraining"] == 3
    assert meta["labels"] == {"background": 0, "foreground": 1}
    assert len(json.loads((out / "splits_final.json").read_text())) == 3
    verify_with_nnunet(out)
    assert main(["convert", "folder", str(data), str(data / "missing"), "--name", "X"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_label_map(tmp_path):
    images, masks, raw = tmp_path / "img", tmp_path / "msk", tmp_path / "raw"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(11)
    for k in range(2):
        Image.fromarray(texture(rng, H, W, 3)).save(images / f"c{k}.png")
        m = np.zeros((H, W), np.uint8)
        m[_mask(k)] = 128
        m[blob(H, W, 15, 20, 3, 3)] = 255
        Image.fromarray(m).save(masks / f"c{k}.png")
    out = convert_folder(images, masks, "Two", output_root=raw, num_processes=1, channels="rgb",
                         label_map=["128:1", "255:2"], label_names=["outer", "inner"], verify=True)
    label = load_png(out / "labelsTs" / "c1.png")
    assert set(np.unique(label)) == {0, 1, 2} and label[15, 20] == 2 and label[9, 13] == 1
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "outer": 1, "inner": 2}

    raw = tmp_path / "raw2"  # Dataset520 is taken in the first one

    refused(convert_folder, "labels .*2.*consecutive", raw, images, masks, "Bad", label_map=["255:2"])
    refused(convert_folder, r"entry '255=1' is not VALUE:LABEL", raw, images, masks, "Bad", label_map=["255=1"])
    refused(convert_folder, r"unexpected label values in .*c0\.png: 255 \(--label-map maps 128:1", raw, images,
            masks, "Bad", label_map="128:1")
    Image.open(masks / "c0.png").save(masks / "c0.jpg")
    (masks / "c0.png").unlink()
    refused(convert_folder, r"--label-map needs lossless masks.*c0\.jpg", raw, images, masks, "Bad",
            label_map=["128:1", "255:2"])


def test_missing_and_stray_masks(bus):
    images, masks, _, raw = bus
    (masks / "case2_gt.jpg").rename(masks / "case2.jpg")
    refused(convert_folder, r"do not end with the mask suffix '_gt': 'case2\.jpg'", raw, images, masks, "B",
            mask_suffix="_gt")
    (masks / "case2.jpg").unlink()
    refused(convert_folder, r"have no mask in .*'case2\.jpg'", raw, images, masks, "B", mask_suffix="_gt")
    (images / "case3.BMP").unlink()
    (images / "case2.jpg").unlink()
    refused(convert_folder, r"have no image in .*'case3_gt\.bmp'", raw, images, masks, "B", mask_suffix="_gt")


def test_size_mismatch(bus):
    images, masks, _, raw = bus
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "case3_gt.bmp")
    refused(convert_folder, r"size mismatch.*case3_gt\.bmp", raw, images, masks, "B", mask_suffix="_gt")


def test_unknown_label_value(bus):
    images, masks, _, raw = bus
    Image.fromarray((np.arange(H * W).reshape(H, W) % 3).astype(np.uint8)).save(masks / "case 1_gt.png")
    refused(convert_folder, r"unexpected label values in .*case 1_gt\.png", raw, images, masks, "B",
            mask_suffix="_gt")


def test_existing_target_and_wrong_folders(bus, tmp_path):
    images, masks, _, raw = bus
    convert_folder(images, masks, "B", output_root=raw, num_processes=1, mask_suffix="_gt")
    refused(convert_folder, "Dataset520_B already exists.*--overwrite", raw, images, masks, "B", mask_suffix="_gt")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    refused(convert_folder, "holds no images", raw, tmp_path / "notes", masks, "C")
    refused(convert_folder, "does not exist", raw, tmp_path / "nope", masks, "C")
    refused(convert_folder, "give --mask-suffix", raw, images, images, "C")
    refused(convert_folder, "needs --name", raw, images, masks, "")


def test_verify_rejects_a_bad_test_set(bus):
    """--verify in target mode runs nnU-Net's per-case checks on imagesTs/labelsTs (its own check needs imagesTr)."""
    from nnunet_lmnet.dataset_conversion.zero_shot import verify_test_set
    from nnunet_lmnet.errors import UserError

    images, masks, truth, raw = bus
    out = convert_folder(images, masks, "B", output_root=raw, num_processes=1, mask_suffix="_gt")
    verify_test_set(out, sorted(truth), 1)
    Image.fromarray(np.full((H, W), 2, np.uint8)).save(out / "labelsTs" / "case2.png")  # label 2 is not declared
    with pytest.raises(UserError, match="integrity check rejected"):
        verify_test_set(out, sorted(truth), 1)


def test_help_of_the_zero_shot_converters(capsys):
    for dataset in ("ph2", "pranet-test", "tnscui2020", "tn3k", "folder"):
        with pytest.raises(SystemExit) as exit_info:
            main(["convert", dataset, "--help"])
        assert exit_info.value.code == 0 and "--mode {target,training}" in capsys.readouterr().out
