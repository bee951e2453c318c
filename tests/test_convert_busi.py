"""BUSI converter: names with spaces and parentheses, merged masks, mixed modes, CMUNeXt splits, bad inputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import (SPLITS_DIR, load_png, make_busi, needs_splits, raw_entries, read_list, tree_digest,
                              verify_with_nnunet)
from nnunet_lmnet.dataset_conversion.busi import convert_busi
from nnunet_lmnet.errors import UserError

# benign (10) has _mask, _mask_1 and _mask_2: its masks must not leak into benign (1).
MULTI = {("benign", 4): 1, ("benign", 10): 2, ("malignant", 2): 1}
COUNTS = {"benign": 12, "malignant": 3, "normal": 2}


@pytest.fixture
def busi(tmp_path):
    truth = make_busi(tmp_path / "download", COUNTS, multi_mask=MULTI)
    return tmp_path / "download", truth, tmp_path / "raw"


def test_converts_benign_and_malignant(busi):
    source, truth, raw = busi
    data = source / "Dataset_BUSI_with_GT"
    assert (data / "benign" / "benign (10)_mask_2.png").is_file()
    assert Image.open(data / "benign" / "benign (7)_mask.png").mode == "RGBA"
    assert Image.open(data / "benign" / "benign (6)_mask.png").mode == "RGB"
    before = tree_digest(source)
    out = convert_busi(data, output_root=raw, num_processes=2)

    assert out.name == "Dataset502_BUSI" and raw_entries(raw) == {out.name}
    assert tree_digest(source) == before
    expected = {f"benign_{n:03d}" for n in range(1, 13)} | {f"malignant_{n:03d}" for n in range(1, 4)}
    assert {p.name[: -len(".png")] for p in (out / "labelsTr").iterdir()} == expected
    for (cls, n), mask in truth.items():
        if cls == "normal":
            continue
        cid = f"{cls}_{n:03d}"
        image = load_png(out / "imagesTr" / f"{cid}_0000.png")
        assert image.ndim == 2, f"{cid}: every image becomes one grey channel"
        label = load_png(out / "labelsTr" / f"{cid}.png")
        assert np.array_equal(label, mask.astype(np.uint8)), cid  # OR of all masks, nothing from other cases
    # the grey content survives the RGB -> grey conversion exactly
    original = np.asarray(Image.open(data / "benign" / "benign (1).png"))
    assert np.array_equal(load_png(out / "imagesTr" / "benign_001_0000.png"), original[..., 0])
    assert load_png(out / "labelsTr" / "benign_010.png").sum() > truth[("benign", 1)].sum()

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "ultrasound"} and meta["numTraining"] == 15
    assert meta["labels"] == {"background": 0, "lesion": 1}
    mapping = json.loads((out / "case_mapping.json").read_text())
    assert mapping["benign_010"] == ["benign/benign (10).png", "benign/benign (10)_mask.png",
                                     "benign/benign (10)_mask_1.png", "benign/benign (10)_mask_2.png"]
    verify_with_nnunet(out)


def test_include_normal_and_rgb(busi):
    source, _, raw = busi
    out = convert_busi(source, output_root=raw, num_processes=1, include_normal=True, rgb=True)
    labels = sorted((out / "labelsTr").iterdir())
    assert len(labels) == 17
    assert load_png(out / "labelsTr" / "normal_002.png").max() == 0
    for image in (out / "imagesTr").iterdir():
        assert load_png(image).shape[-1] == 3  # the grey (mode L) and RGBA images too
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    verify_with_nnunet(out)


@needs_splits
def test_cmunext_split_lists(tmp_path):
    folder = SPLITS_DIR / "busi_cmunext_3x70-30"
    make_busi(tmp_path / "dl", {"benign": 437, "malignant": 210}, size=6, odd_modes=False)
    files = sorted(folder.glob("busi_*.txt"))  # train1..3, val1..3, as a shell glob passes them
    out = convert_busi(tmp_path / "dl", output_root=tmp_path / "raw", num_processes=2, splits=files)
    folds = json.loads((out / "splits_final.json").read_text())

    def ids(name):  # 'benign (12)' -> 'benign_012'
        return sorted(f"{n.split(' (')[0]}_{int(n.split('(')[1].rstrip(')')):03d}" for n in read_list(folder / name))

    assert len(folds) == 3
    for k, fold in enumerate(folds, start=1):
        assert fold["train"] == ids(f"busi_train{k}.txt") and fold["val"] == ids(f"busi_val{k}.txt")
        assert (len(fold["train"]), len(fold["val"])) == (452, 195)
    # benign (195) has three masks: all merged
    assert (out / "labelsTr" / "benign_195.png").is_file()


def _fails(source, raw, match, **kwargs):
    with pytest.raises(UserError, match=match):
        convert_busi(source, output_root=raw, num_processes=1, **kwargs)
    assert not raw_entries(raw)


def test_unexpected_mask_values(busi):
    source, _, raw = busi
    path = source / "Dataset_BUSI_with_GT" / "malignant" / "malignant (1)_mask.png"
    size = Image.open(path).size
    Image.fromarray(np.tile(np.array([0, 1, 2], np.uint8), (size[1], size[0] // 3 + 1))[:, : size[0]]).save(path)
    _fails(source, raw, r"unexpected label values in .*malignant \(1\)_mask\.png")


def test_grey_image_as_mask(busi):
    source, _, raw = busi
    folder = source / "Dataset_BUSI_with_GT" / "benign"
    Image.open(folder / "benign (3).png").save(folder / "benign (3)_mask.png")  # an image, not a mask
    _fails(source, raw, r"benign \(3\)_mask\.png.*grey")


def test_missing_and_stray_masks(busi, tmp_path):
    source, _, raw = busi
    folder = source / "Dataset_BUSI_with_GT" / "benign"
    (folder / "benign (8)_mask.png").rename(tmp_path / "kept.png")
    _fails(source, raw, r"have no mask: 'benign \(8\)\.png'")
    (tmp_path / "kept.png").rename(folder / "benign (8)_mask.png")
    (folder / "benign (9).png").unlink()
    _fails(source, raw, r"have no image: 'benign \(9\)_mask\.png'")


def test_size_mismatch_in_extra_mask(busi):
    source, _, raw = busi
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(
        source / "Dataset_BUSI_with_GT" / "benign" / "benign (4)_mask_1.png")
    _fails(source, raw, r"size mismatch.*benign \(4\)_mask_1\.png")


def test_corrupt_png_and_unknown_file(busi):
    source, _, raw = busi
    folder = source / "Dataset_BUSI_with_GT" / "malignant"
    (folder / "malignant (3).png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _fails(source, raw, r"cannot read .*malignant \(3\)\.png")
    (folder / "malignant (3) copy.png").write_bytes(b"")
    _fails(source, raw, r"unexpected file .*malignant \(3\) copy\.png")


def test_unknown_split_id_and_missing_normal(busi, tmp_path):
    source, _, raw = busi
    val = tmp_path / "busi_val1.txt"
    val.write_bytes(b"benign (1)\r\nbenign (999)\r\n")
    _fails(source, raw, r"busi_val1\.txt.*not training cases.*'benign \(999\)'", splits=[val])
    val.write_bytes(b"benign (1)\r\nnormal (1)\r\n")  # normal excluded by default: not a case
    _fails(source, raw, r"'normal \(1\)'", splits=[val])
    shutil.rmtree(source / "Dataset_BUSI_with_GT" / "normal")
    _fails(source, raw, r"normal.*does not exist.*--include-normal", include_normal=True)
