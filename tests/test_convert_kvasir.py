"""Kvasir-SEG converter: lossless PNG images, thresholded JPEG masks, official split, bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import (SPLITS_DIR, check_folds, kvasir_ids, load_png, make_kvasir, needs_splits,
                              raw_entries, read_list, tree_digest, verify_with_nnunet)
from nnunet_lmnet.dataset_conversion.kvasir import convert_kvasir
from nnunet_lmnet.errors import UserError


@pytest.fixture
def kvasir(tmp_path):
    ids = kvasir_ids(6)
    truth = make_kvasir(tmp_path / "download", ids)
    return tmp_path / "download", ids, truth, tmp_path / "raw"


def test_converts_the_download(kvasir):
    source, ids, truth, raw = kvasir
    before = tree_digest(source)
    out = convert_kvasir(source, output_root=raw, num_processes=1)

    assert out == raw / "Dataset501_KvasirSEG"
    assert raw_entries(raw) == {"Dataset501_KvasirSEG"}  # no temporary folder left
    assert tree_digest(source) == before
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == sorted(f"{i}_0000.png" for i in ids)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == sorted(f"{i}.png" for i in ids)
    for cid in ids:
        image = load_png(out / "imagesTr" / f"{cid}_0000.png")
        with Image.open(source / "Kvasir-SEG" / "images" / f"{cid}.jpg") as jpg:
            assert np.array_equal(image, np.asarray(jpg))  # the decoded JPEG, stored losslessly as RGB
        raw_mask = np.asarray(Image.open(source / "Kvasir-SEG" / "masks" / f"{cid}.jpg"))
        label = load_png(out / "labelsTr" / f"{cid}.png")
        assert label.ndim == 2 and label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
        assert label.shape == image.shape[:2]
        assert (label != truth[cid]).mean() < 0.01
        # the real masks' JPEG ringing is there and did not leak into the label
        assert set(np.unique(raw_mask)) - {0, 255}

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert meta["labels"] == {"background": 0, "polyp": 1}
    assert meta["numTraining"] == 6 and meta["file_ending"] == ".png"
    folds = json.loads((out / "splits_final.json").read_text())
    assert len(folds) == 5
    check_folds(folds, set(ids))
    assert json.loads((out / "case_mapping.json").read_text())[ids[0]] == [f"images/{ids[0]}.jpg",
                                                                          f"masks/{ids[0]}.jpg"]
    verify_with_nnunet(out)


@needs_splits
def test_official_split_lists(tmp_path):
    train = read_list(SPLITS_DIR / "kvasir_seg_official" / "train.txt")
    val = read_list(SPLITS_DIR / "kvasir_seg_official" / "val.txt")
    make_kvasir(tmp_path / "dl", train + val, sizes=((10, 12), (9, 13)))
    out = convert_kvasir(tmp_path / "dl" / "Kvasir-SEG", output_root=tmp_path / "raw", num_processes=2,
                         splits=[SPLITS_DIR / "kvasir_seg_official" / "train.txt",
                                 SPLITS_DIR / "kvasir_seg_official" / "val.txt"])
    folds = json.loads((out / "splits_final.json").read_text())
    assert len(folds) == 1
    assert folds[0]["train"] == sorted(train) and folds[0]["val"] == sorted(val)
    assert len(list((out / "labelsTr").iterdir())) == 1000


def _convert_fails(source, raw, match, **kwargs):
    with pytest.raises(UserError, match=match):
        convert_kvasir(source, output_root=raw, num_processes=1, **kwargs)
    assert not {n for n in raw_entries(raw) if "Dataset501" in n}  # nothing written, nothing left behind


def test_missing_mask(kvasir):
    source, ids, _, raw = kvasir
    (source / "Kvasir-SEG" / "masks" / f"{ids[2]}.jpg").unlink()
    _convert_fails(source, raw, rf"have no mask.*{ids[2]}\.jpg")


def test_mask_without_image(kvasir):
    source, ids, _, raw = kvasir
    (source / "Kvasir-SEG" / "images" / f"{ids[1]}.jpg").unlink()
    _convert_fails(source, raw, rf"have no image.*{ids[1]}\.jpg")


def test_corrupt_image(kvasir):
    source, ids, _, raw = kvasir
    path = source / "Kvasir-SEG" / "images" / f"{ids[3]}.jpg"
    path.write_bytes(path.read_bytes()[:200])  # a truncated download
    _convert_fails(source, raw, rf"cannot read .*{ids[3]}\.jpg")


def test_size_mismatch(kvasir):
    source, ids, _, raw = kvasir
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(source / "Kvasir-SEG" / "masks" / f"{ids[0]}.jpg")
    _convert_fails(source, raw, rf"size mismatch.*{ids[0]}")


def test_image_in_mask_folder(kvasir):
    source, ids, _, raw = kvasir
    mask = source / "Kvasir-SEG" / "masks" / f"{ids[0]}.jpg"
    mask.write_bytes((source / "Kvasir-SEG" / "images" / f"{ids[0]}.jpg").read_bytes())
    _convert_fails(source, raw, rf"{ids[0]}\.jpg.*(coloured|grey)")


def test_wrong_and_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _convert_fails(tmp_path / "empty", tmp_path / "raw", "is empty")
    (tmp_path / "busi" / "benign").mkdir(parents=True)
    (tmp_path / "busi" / "benign" / "benign (1).png").write_bytes(b"")
    _convert_fails(tmp_path / "busi", tmp_path / "raw", "does not hold the Kvasir-SEG data")
    _convert_fails(tmp_path / "missing", tmp_path / "raw", "does not exist")


def test_existing_target_needs_overwrite(kvasir):
    source, ids, _, raw = kvasir
    out = convert_kvasir(source, output_root=raw, num_processes=1, splits=None)
    (out / "marker.txt").write_text("previous conversion")
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        convert_kvasir(source, output_root=raw, num_processes=1)
    assert (out / "marker.txt").exists()  # refused: the existing dataset is untouched
    convert_kvasir(source, output_root=raw, num_processes=1, overwrite=True)
    assert not (out / "marker.txt").exists() and len(list((out / "imagesTr").iterdir())) == len(ids)
    assert raw_entries(raw) == {"Dataset501_KvasirSEG"}


def test_failure_keeps_the_previous_dataset(kvasir):
    """--overwrite with a bad source: the old dataset survives, no half-written replacement appears."""
    source, ids, _, raw = kvasir
    out = convert_kvasir(source, output_root=raw, num_processes=1)
    before = tree_digest(out)
    bad = source / "Kvasir-SEG" / "images" / f"{ids[-1]}.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="cannot read"):
        convert_kvasir(source, output_root=raw, num_processes=2, overwrite=True)
    assert tree_digest(out) == before
    assert raw_entries(raw) == {"Dataset501_KvasirSEG"}


def test_unsafe_names_get_safe_case_ids(tmp_path):
    make_kvasir(tmp_path / "dl", ["my polyp (1)", "my polyp (2)", "other.v2"])
    (tmp_path / "val.txt").write_text("my polyp (2)\n")
    out = convert_kvasir(tmp_path / "dl", output_root=tmp_path / "raw", num_processes=1,
                         splits=[tmp_path / "val.txt"])
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["my_polyp_1.png", "my_polyp_2.png",
                                                                    "other_v2.png"]
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": ["my_polyp_1", "other_v2"],
                                                                     "val": ["my_polyp_2"]}]
