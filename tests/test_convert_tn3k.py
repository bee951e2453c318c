"""TN3K converter: JPEG images and lossy JPEG masks, both parts as a target or trainval/test as a training dataset,
TRFE-Net's index-based fold files, bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import load_png, raw_entries, tree_digest, verify_with_nnunet
from nnunet_lmnet.dataset_conversion.tn3k import convert_tn3k
from zero_shot_fixtures import make_tn3k, refused


@pytest.fixture
def tn3k(tmp_path):
    truth = make_tn3k(tmp_path / "download", trainval=4, test=2)
    return tmp_path / "download", truth, tmp_path / "raw"


def test_converts_both_parts_as_target(tn3k):
    source, truth, raw = tn3k
    before = tree_digest(source)
    out = convert_tn3k(source, output_root=raw, num_processes=1, verify=True)

    assert out == raw / "Dataset509_TN3K" and raw_entries(raw) == {out.name}
    assert tree_digest(source) == before
    assert sorted(p.name[:-4] for p in (out / "labelsTs").iterdir()) == sorted(truth)
    for cid, mask in truth.items():
        part, number = cid.split("_")[1:]
        image = load_png(out / "imagesTs" / f"{cid}_0000.png")
        jpeg = np.asarray(Image.open(source / "tn3k" / f"{part}-image" / f"{number}.jpg"))
        assert image.ndim == 2  # one grey channel, also for the RGB-encoded JPEG (trainval 0001)
        assert np.abs(image.astype(int) - (jpeg if jpeg.ndim == 2 else jpeg.mean(-1))).max() <= 2
        raw_mask = np.asarray(Image.open(source / "tn3k" / f"{part}-mask" / f"{number}.jpg"))
        assert set(np.unique(raw_mask)) - {0, 255}  # the JPEG ringing is there...
        label = load_png(out / "labelsTs" / f"{cid}.png")
        assert set(np.unique(label)) == {0, 1} and (label != mask).mean() < 0.01  # ...and thresholded away
    assert Image.open(source / "tn3k" / "trainval-image" / "0001.jpg").mode == "RGB"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 0 and meta["channel_names"] == {"0": "ultrasound"}
    assert meta["labels"] == {"background": 0, "nodule": 1} and meta["pairs_with"] == "tnscui2020"

    only = convert_tn3k(source, output_root=raw, num_processes=1, test_only=True, dataset_id=592)
    assert sorted(p.name for p in (only / "labelsTs").iterdir()) == ["TN3K_test_0000.png", "TN3K_test_0001.png"]


def test_training_dataset_with_trfe_fold_files(tn3k, tmp_path):
    source, _, raw = tn3k
    folds = []
    for k, val in enumerate(([0, 1], [2, 3])):
        path = tmp_path / f"tn3k-trainval-fold{k}.json"
        path.write_text(json.dumps({"train": [i for i in range(4) if i not in val], "val": val}))
        folds.append(path)
    out = convert_tn3k(source, output_root=raw, num_processes=1, mode="training", splits=folds)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"TN3K_trainval_{n:04d}.png" for n in range(4)]
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == ["TN3K_test_0000.png", "TN3K_test_0001.png"]
    assert json.loads((out / "splits_final.json").read_text()) == [
        {"train": ["TN3K_trainval_0002", "TN3K_trainval_0003"], "val": ["TN3K_trainval_0000", "TN3K_trainval_0001"]},
        {"train": ["TN3K_trainval_0000", "TN3K_trainval_0001"], "val": ["TN3K_trainval_0002", "TN3K_trainval_0003"]}]
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 4
    verify_with_nnunet(out)

    folds[1].write_text(json.dumps({"train": [0, 1], "val": [2, 7]}))
    refused(convert_tn3k, r"tn3k-trainval-fold1\.json: indices 7 are outside the 4 trainval images", raw, source,
            mode="training", splits=folds, overwrite=True)


def test_missing_mask(tn3k):
    source, _, raw = tn3k
    (source / "tn3k" / "test-mask" / "0001.jpg").unlink()
    refused(convert_tn3k, r"have no mask.*'0001\.jpg'", raw, source)


def test_size_mismatch(tn3k):
    source, _, raw = tn3k
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(source / "tn3k" / "trainval-mask" / "0002.jpg")
    refused(convert_tn3k, r"size mismatch.*trainval-mask/0002\.jpg", raw, source)


def test_image_as_mask(tn3k):
    source, _, raw = tn3k
    image = source / "tn3k" / "trainval-image" / "0000.jpg"
    (source / "tn3k" / "trainval-mask" / "0000.jpg").write_bytes(image.read_bytes())
    refused(convert_tn3k, r"unexpected label values in .*trainval-mask/0000\.jpg.*grey", raw, source)


def test_existing_target_and_wrong_source(tn3k, tmp_path):
    source, _, raw = tn3k
    convert_tn3k(source, output_root=raw, num_processes=1)
    refused(convert_tn3k, "already exists.*--overwrite", raw, source)
    (tmp_path / "busi_like" / "benign").mkdir(parents=True)
    (tmp_path / "busi_like" / "benign" / "benign (1).png").write_bytes(b"")
    refused(convert_tn3k, "does not hold the TN3K data", raw, tmp_path / "busi_like")
    refused(convert_tn3k, "--test-only .* needs --mode target", raw, source, mode="training", test_only=True)
    for p in (source / "tn3k" / "test-mask").iterdir():
        p.unlink()
    (source / "tn3k" / "test-mask").rmdir()
    refused(convert_tn3k, "has test-image/ but no test-mask/", raw, source, overwrite=True)
