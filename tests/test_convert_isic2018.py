"""ISIC 2018 Task 1 converter: training pairs, validation/test inputs to imagesTs, large images, bad inputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import (SPLITS_DIR, isic_ids, load_png, make_isic, needs_splits, raw_entries, read_list,
                              tree_digest)
from nnunet_lmnet.dataset_conversion.isic2018 import convert_isic2018
from nnunet_lmnet.dataset_conversion.splits import build_aliases, read_split_files, resolve_splits
from nnunet_lmnet.errors import UserError

TRAIN, VAL, TEST = isic_ids(5), isic_ids(2, start=12000), isic_ids(3, start=13000)


@pytest.fixture
def isic(tmp_path):
    base = tmp_path / "isic"
    truth = make_isic(base, TRAIN, VAL, TEST)
    shutil.rmtree(base / "ISIC2018_Task1_Test_GroundTruth")  # test GT is optional
    return base, truth, tmp_path / "raw"


def test_converts_training_and_test_inputs(isic, tmp_path):
    source, truth, raw = isic
    before = tree_digest(source)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "isic18_train1.txt").write_bytes(b"".join(i.encode() + b"\r\n" for i in TRAIN[:3]))
    (lists / "isic18_val1.txt").write_bytes(b"".join(i.encode() + b"\r\n" for i in TRAIN[3:]))
    out = convert_isic2018(source, output_root=raw, num_processes=2,
                           splits=[lists / "isic18_train1.txt", lists / "isic18_val1.txt"])

    assert out.name == "Dataset504_ISIC2018" and raw_entries(raw) == {out.name}
    assert tree_digest(source) == before
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"{i}_0000.png" for i in TRAIN]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == sorted(f"{i}_0000.png" for i in VAL + TEST)
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == [f"{i}.png" for i in VAL]
    for cid in TRAIN + VAL:
        folder = "Training" if cid in TRAIN else "Validation"
        image = load_png(out / ("imagesTr" if cid in TRAIN else "imagesTs") / f"{cid}_0000.png")
        with Image.open(source / f"ISIC2018_Task1-2_{folder}_Input" / f"{cid}.jpg") as jpg:
            assert np.array_equal(image, np.asarray(jpg))
        label = load_png(out / ("labelsTr" if cid in TRAIN else "labelsTs") / f"{cid}.png")
        assert np.array_equal(label, truth[cid].astype(np.uint8))
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 5 and meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": TRAIN[:3], "val": TRAIN[3:]}]


def test_large_image_native_and_downscaled(tmp_path):
    base = tmp_path / "isic"
    make_isic(base, TRAIN[:2])
    w, h = 2400, 1800  # a large dermoscopy-sized JPEG
    gradient = np.dstack([np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))] * 3)
    Image.fromarray(gradient).save(base / "ISIC2018_Task1-2_Training_Input" / f"{TRAIN[0]}.jpg")
    mask = np.zeros((h, w), np.uint8)
    mask[400:1400, 600:1800] = 255
    Image.fromarray(mask).save(base / "ISIC2018_Task1_Training_GroundTruth" / f"{TRAIN[0]}_segmentation.png")

    native = convert_isic2018(base / "ISIC2018_Task1-2_Training_Input", output_root=tmp_path / "raw",
                              num_processes=1)
    assert load_png(native / "imagesTr" / f"{TRAIN[0]}_0000.png").shape == (h, w, 3)

    small = convert_isic2018(base, output_root=tmp_path / "raw", num_processes=1, max_size=240, overwrite=True)
    image = load_png(small / "imagesTr" / f"{TRAIN[0]}_0000.png")
    label = load_png(small / "labelsTr" / f"{TRAIN[0]}.png")
    assert image.shape == (180, 240, 3) and label.shape == (180, 240)
    assert label.sum() == pytest.approx(100 * 120, rel=0.03) and set(np.unique(label)) == {0, 1}
    assert load_png(small / "imagesTr" / f"{TRAIN[1]}_0000.png").shape[:2] != (180, 240)  # small: untouched


@needs_splits
def test_lgmsnet_split_lists_resolve():
    folder = SPLITS_DIR / "isic2018_lgmsnet_3x70-30"
    train1, val1 = read_list(folder / "isic18_train1.txt"), read_list(folder / "isic18_val1.txt")
    cases = sorted(set(train1) | set(val1))
    assert len(cases) == 2594
    aliases = build_aliases({c: [f"{c}_segmentation"] for c in cases})
    folds = resolve_splits(read_split_files(sorted(folder.glob("isic18_*.txt"))), cases, aliases, "ISIC 2018")
    assert len(folds) == 3
    for k, fold in enumerate(folds, start=1):
        assert fold["val"] == sorted(read_list(folder / f"isic18_val{k}.txt"))
        assert (len(fold["train"]), len(fold["val"])) == (1815, 779)


def _fails(source, raw, match, **kwargs):
    with pytest.raises(UserError, match=match):
        convert_isic2018(source, output_root=raw, num_processes=1, **kwargs)
    assert not raw_entries(raw)


def test_bad_inputs(isic, tmp_path):
    source, _, raw = isic
    gt = source / "ISIC2018_Task1_Training_GroundTruth"
    inputs = source / "ISIC2018_Task1-2_Training_Input"

    (gt / f"{TRAIN[1]}_segmentation.png").rename(tmp_path / "m.png")
    _fails(source, raw, rf"have no mask .*{TRAIN[1]}\.jpg")
    (tmp_path / "m.png").rename(gt / f"{TRAIN[1]}_Segmentation.png")  # 2016/17 spelling: accepted
    convert_isic2018(source, output_root=tmp_path / "raw2", num_processes=1)

    good = (gt / f"{TRAIN[2]}_segmentation.png").read_bytes()
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(gt / f"{TRAIN[2]}_segmentation.png")
    _fails(source, raw, rf"size mismatch.*{TRAIN[2]}")
    (gt / f"{TRAIN[2]}_segmentation.png").write_bytes(good)

    jpg = inputs / f"{TRAIN[3]}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])
    _fails(source, raw, rf"cannot read .*{TRAIN[3]}\.jpg")

    shutil.rmtree(gt)
    _fails(source, raw, "no ISIC2018_Task1_Training_GroundTruth")
    _fails(tmp_path / "raw2", raw, "does not hold the ISIC 2018 Task 1 data")
